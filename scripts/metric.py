from layersweep.script_runner import run_script


def main(sm):
    from layersweep import pipeline
    from layersweep.io import write_parquet
    from layersweep.metrics.metric_shard import score_metric_shard
    from layersweep.preprocess import preprocessing_for

    p = sm.params
    ids, crops = pipeline.shard_crops(sm.input.maps, sm.input.crops, sm.input.index)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    preprocessing = preprocessing_for(p.model["source"])
    boxes = pipeline.shard_boxes(sm.input.index, ids)  # None in crop mode
    attribute = None
    if p.attribution:  # the metric recomputes the shard's method on perturbed inputs
        attribute = pipeline.method_on_inputs(model, sm.input, sm.wildcards.method, sm.input.maps, p.attribution,
                                              seed=p.seed, device=device, preprocessing=preprocessing)
    table = score_metric_shard(sm.wildcards.metric, model, crops, sm.input.maps, crop_ids=ids, options=p.options,
                               r=p.r, rtol=p.rtol, mask_space=p.mask_space, batch_size=p.batch_size,
                               constant_eps=p.constant_eps, device=device, precision=p.precision, seed=p.seed,
                               boxes=boxes, attribute=attribute, preprocessing=preprocessing)
    write_parquet(table, sm.output[0])


run_script(snakemake, main)
