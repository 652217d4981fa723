import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import write_parquet
    from layersweep.metrics import summarize

    per_image = pd.concat([pd.read_parquet(f) for f in sm.input], ignore_index=True)
    columns = sm.params.get("columns")  # an added metric's columns; None = the report's four
    write_parquet(summarize(per_image, n_boot=sm.params.n_boot, ci=sm.params.ci, seed=sm.params.seed,
                            metrics=columns), sm.output[0])


run_script(snakemake, main)
