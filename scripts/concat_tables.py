import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import write_parquet

    write_parquet(pd.concat([pd.read_parquet(f) for f in sm.input], ignore_index=True), sm.output[0])


run_script(snakemake, main)
