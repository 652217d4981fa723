import logging

from layersweep.script_runner import run_script

log = logging.getLogger("layersweep.cost")


def main(sm):
    import dataclasses

    import pandas as pd
    import torch

    from layersweep import cost
    from layersweep.device import resolve_device
    from layersweep.io import atomic_path

    p = sm.params
    config = {"data": {"crop_size": p.crop_size}, "model": p.model, "attribution": p.attribution, "device": p.device}
    n_crops = p.n_images if p.n_images != "all" else len(pd.read_parquet(sm.input.index))
    device = resolve_device(p.device)
    seconds = cost.measure_seconds(cost.timing_model(config, device), p.crop_size, device)
    # the Eigen methods' SVDs run on the CPU, min(batch, threads) crops at a time, whatever the device
    workers = min(int(p.attribution["batch_size"]), torch.get_num_threads())
    svd = cost.measure_svd_seconds(cost.svd_shapes(p.methods, config), workers=workers)
    seconds = dataclasses.replace(seconds, svd=svd)
    table = cost.cost_table(p.methods, config, n_crops, seconds, metrics=p.metrics)
    totals = table[table["layer"] == "total"].drop(columns=["layer", "name"])
    log.info("one forward %.4f s, one backward %.4f s per %d-px crop (%s)", seconds.forward, seconds.backward,
             p.crop_size, seconds.source)
    for (rows, cols), sec in sorted(svd.items()):
        log.info("one SVD of a (%d, %d) matrix: %.4f s per crop (numpy on the CPU, %d crops at a time)", rows, cols,
                 sec, workers)
    log.info("projected cost of %d crops (per-layer rows in %s):\n%s", n_crops, sm.output[0],
             totals.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    with atomic_path(sm.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


run_script(snakemake, main)
