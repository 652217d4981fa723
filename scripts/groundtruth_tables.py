from layersweep.script_runner import run_script


def main(sm):
    import pandas as pd

    from layersweep.groundtruth import groundtruth_table, metric_agreement
    from layersweep.io import atomic_path

    p = sm.params
    per_map = pd.read_parquet(sm.input[0])
    if p.what == "groundtruth":
        table = groundtruth_table(per_map, n_boot=p.n_boot, ci=p.ci, seed=p.seed)
    else:
        table = metric_agreement(per_map, dict(p.columns), n_boot=p.n_boot, ci=p.ci, seed=p.seed,
                                 n_boot_maps=min(p.n_boot, 200))
    with atomic_path(sm.output[0]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


run_script(snakemake, main)
