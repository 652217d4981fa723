import numpy as np

from layersweep.script_runner import run_script


def main(sm):
    from layersweep import pipeline
    from layersweep.attribution import attribute_crops, write_attribution_shard
    from layersweep.attribution.sites import site_table
    from layersweep.preprocess import preprocessing_for

    p = sm.params
    ids, crops, labels = pipeline.eval_shard(sm.input.crops, sm.input.index, **p.shard)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    layers = site_table(model).resolve(p.layers)
    base = pipeline.baselines(sm.input, p.n_baselines, p.shard["seed"])
    method = sm.wildcards.method
    out = attribute_crops(model, crops, labels, base, [method], layers, batch_size=p.batch_size,
                          max_pairs=p.max_pairs, device=device, attribute_to=p.attribute_to,
                          precision=p.precision, preprocessing=preprocessing_for(p.model["source"]),
                          options={method: dict(p.options)},
                          seed=p.shard["seed"], crop_ids=ids, perturb_batch=p.perturb_batch, dtype=p.dtype,
                          return_weights=p.store_weights)
    table = site_table(model)
    # which site each integer key is, and whether DeepLift had captum's rules all the way (docs/architectures.md)
    sites = {"site_name": np.array([table[l].name for l in layers]),
             "deeplift_rules": np.array([table.graph.deeplift_rules(table.node_of(l)) for l in layers])}
    write_attribution_shard(sm.output[0], method, ids, labels, out["logit"], out["prob"], out["maps"][method],
                            p.store_dtype, weights_by_layer=out["weights"].get(method) if p.store_weights else None,
                            extra=sites)


run_script(snakemake, main)
