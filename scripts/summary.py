import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import write_parquet
    from layersweep.metrics import summarize

    p = sm.params
    per_image = pd.concat([pd.read_parquet(f) for f in sm.input], ignore_index=True)
    write_parquet(summarize(per_image, n_boot=p.n_boot, ci=p.ci, seed=p.seed, metrics=p.columns,
                            rescaled_metrics=p.rescaled_columns), sm.output[0])


run_script(snakemake, main)
