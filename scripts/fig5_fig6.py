import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.layers import arch_layer_specs

    p = sm.params
    summary = pd.read_parquet(sm.input.summary)
    reference = figures.load_reference(p.reference_json)
    specs = arch_layer_specs(**p.arch)  # the x axis: the layers of model.arch
    if sm.rule == "fig5":
        figures.fig5(summary, sm.output.pdf, sm.output.png, sm.output.table, reference=reference, methods=p.methods,
                     specs=specs, **p.plot)
    else:
        figures.fig6(summary, p.r, sm.output.pdf, sm.output.png, sm.output.table, reference=reference,
                     methods=p.methods, specs=specs, **p.plot)


run_script(snakemake, main)
