import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures

    method_a, method_b = sm.params.compare
    figures.fig7(pd.read_parquet(sm.input.paired), sm.params.r, sm.output.pdf, sm.output.png, sm.output.table,
                 method_a=method_a, method_b=method_b, **sm.params.plot)


run_script(snakemake, main)
