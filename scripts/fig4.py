from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.figures.fig4 import fig4_transformer
    from layersweep.layers import arch_layer_specs
    from layersweep.models import adapter_for

    if adapter_for(sm.params.arch["arch"]).layout != "nchw":  # attention: no receptive field to plot
        fig4_transformer(sm.params.arch["arch"], sm.output.pdf, sm.output.png, sm.output.table, **sm.params.plot)
        return
    specs = arch_layer_specs(**sm.params.arch)
    figures.fig4(specs, sm.output.pdf, sm.output.png, sm.output.table, **sm.params.plot)


run_script(snakemake, main)
