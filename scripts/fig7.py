import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures
    from layersweep.layers import arch_layer_specs

    method_a, method_b = sm.params.compare
    figures.fig7(pd.read_parquet(sm.input.paired), sm.params.r, sm.output.pdf, sm.output.png, sm.output.table,
                 method_a=method_a, method_b=method_b, specs=arch_layer_specs(**sm.params.arch),
                 **sm.params.plot)


run_script(snakemake, main)
