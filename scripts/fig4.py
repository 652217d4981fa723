from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.layers import layer_specs
    from layersweep.model import build_features

    specs = layer_specs(build_features(**sm.params.arch))
    figures.fig4(specs, sm.output.pdf, sm.output.png, sm.output.table, **sm.params.plot)


run_script(snakemake, main)
