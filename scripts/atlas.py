import numpy as np

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures, pipeline
    from layersweep.attribution import read_attribution_shard
    from layersweep.attribution.registry import get_method
    from layersweep.data import read_split
    from layersweep.errors import LayersweepError
    from layersweep.layers import arch_layer_specs

    p = sm.params
    crops, index = read_split(sm.input.crops, sm.input.index, mmap_mode="r")
    ids = pipeline.example_crop_ids(index, p.example_crops, p.seed)
    sel, labels = pipeline.select(crops, index, ids)
    wanted = set(ids)
    found = {method: {} for method in p.methods}  # method -> crop id -> {layer: map}
    fallback = set()  # DeepLift-family methods that took the plain gradient through some nonlinearity
    for path in sm.input.shards:  # each shard read once
        shard = read_attribution_shard(path)
        if get_method(shard.method).pass_kind in ("deeplift", "deeplift0") \
                and "gradient_fallback" in np.asarray(shard.extra.get("deeplift_rules", [])).tolist():
            fallback.add(shard.method)
        if shard.method in found:
            for i, cid in enumerate(shard.crop_ids):
                if cid in wanted:
                    found[shard.method][cid] = {layer: m[i] for layer, m in shard.maps.items()}
    maps = {}
    for method in p.methods:
        rows = found[method]
        missing = [c for c in ids if c not in rows]
        if missing:
            raise LayersweepError(f"crop id '{missing[0]}' is not among the evaluated crops of method '{method}' "
                                  "(config key 'data.n_images'); the atlas draws evaluated crops only "
                                  "(config key 'figures.example_crops').")
        layers = sorted(set.intersection(*(set(rows[c]) for c in ids)))
        maps[method] = {layer: [rows[c][layer] for c in ids] for layer in layers}
    figures.atlas(sel, ids, maps, sm.output.pdf, sm.output.png, sm.output.table, labels=labels,
                   gradient_fallback=fallback, specs=arch_layer_specs(**p.arch), **p.plot)


run_script(snakemake, main)
