from layersweep.script_runner import run_script


def main(sm):
    from torchvision.models import vgg11

    from layersweep import figures
    from layersweep.layers import layer_specs

    figures.fig4(layer_specs(vgg11().features), sm.output.pdf, sm.output.png, sm.output.table, **sm.params.plot)


run_script(snakemake, main)
