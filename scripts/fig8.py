import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.layers import arch_layer_specs

    p = sm.params
    summary = pd.concat([pd.read_parquet(f) for f in sm.input.summaries], ignore_index=True)
    figures.fig8(summary, sm.output.pdf, sm.output.png, sm.output.table, metrics=p.metrics, methods=p.methods,
                 specs=arch_layer_specs(**p.arch), **p.plot)


run_script(snakemake, main)
