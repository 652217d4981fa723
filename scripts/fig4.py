from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.layers import arch_layer_specs

    specs = arch_layer_specs(**sm.params.arch)
    figures.fig4(specs, sm.output.pdf, sm.output.png, sm.output.table, **sm.params.plot)


run_script(snakemake, main)
