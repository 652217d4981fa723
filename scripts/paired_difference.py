import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import write_parquet
    from layersweep.metrics import paired_difference

    p = sm.params
    method_a, method_b = p.compare
    tables = []
    for files in (sm.input.plain, sm.input.rescaled):
        per_image = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        for metric in ("ad", "ic"):
            tables.append(paired_difference(per_image, metric=metric, method_a=method_a, method_b=method_b,
                                            n_boot=p.n_boot, ci=p.ci, seed=p.seed))
    write_parquet(pd.concat(tables, ignore_index=True), sm.output[0])


run_script(snakemake, main)
