from layersweep.script_runner import run_script


def main(sm):
    import pandas as pd
    import torch

    from layersweep.attribution import read_attribution_shard
    from layersweep.data import read_split
    from layersweep.figures.groundtruth import refinecam_figure
    from layersweep.metrics.batching import normalize_maps
    from layersweep.shapes import masks_by_id

    p = sm.params
    gt = pd.read_csv(sm.input.table)
    per_map = pd.read_parquet(sm.input.per_map)
    shards = [read_attribution_shard(f) for f in sm.input.shards]
    crops, index = read_split(sm.input.crops, sm.input.index)
    size = crops.shape[1]
    correct = set(per_map["crop_id"])
    ids = [c for c in shards[0].crop_ids if c in correct][: p.n_examples]  # shard 0's first correct samples
    row = {c: i for i, c in enumerate(index["crop_id"])}
    masks = masks_by_id(sm.input.masks, sm.input.index, ids)
    examples = []
    for k, cid in enumerate(ids):
        maps = {}
        for sh in shards:
            i = sh.crop_ids.index(cid)
            maps[sh.method] = {layer: normalize_maps(torch.from_numpy(m[i:i + 1].astype("float32")), size)[0][0].numpy()
                               for layer, m in sh.maps.items()}
        examples.append((cid, crops[row[cid]], masks[k], maps))
    names = {int(l): f"features.{int(l)}" for l in gt["layer"].unique()}
    refinecam_figure(gt, examples, sm.output.pdf, sm.output.png, sm.output.table, study=p.study, layer_names=names)


run_script(snakemake, main)
