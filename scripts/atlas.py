from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures, pipeline
    from layersweep.attribution import read_attribution_shard
    from layersweep.data import read_split
    from layersweep.errors import LayersweepError

    p = sm.params
    crops, index = read_split(sm.input.crops, sm.input.index, mmap_mode="r")
    ids = pipeline.example_crop_ids(index, p.example_crops, p.seed)
    sel, labels = pipeline.select(crops, index, ids)
    maps = {}
    for method in p.methods:
        rows = {}  # crop id -> {layer: map}
        for path in sm.input.shards:
            shard = read_attribution_shard(path)
            if str(shard["method"]) != method:
                continue
            for i, cid in enumerate(shard["crop_id"]):
                if str(cid) in ids:
                    rows[str(cid)] = {layer: m[i] for layer, m in shard["maps"].items()}
        missing = [c for c in ids if c not in rows]
        if missing:
            raise LayersweepError(f"crop id '{missing[0]}' is not among the evaluated crops of method '{method}' "
                                  "(config key 'data.n_images'); the atlas draws evaluated crops only "
                                  "(config key 'figures.example_crops').")
        layers = sorted(set.intersection(*(set(rows[c]) for c in ids)))
        maps[method] = {layer: [rows[c][layer] for c in ids] for layer in layers}
    figures.atlas(sel, ids, maps, sm.output.pdf, sm.output.png, sm.output.table, labels=labels, **p.plot)


run_script(snakemake, main)
