from layersweep.script_runner import run_script


def main(sm):
    from layersweep import pipeline
    from layersweep.attribution import read_attribution_shard
    from layersweep.io import write_parquet
    from layersweep.metrics import get_metric, score_metric_shard
    from layersweep.preprocess import preprocessing_for

    p = sm.params
    metric = get_metric(sm.wildcards.metric)
    shard = read_attribution_shard(sm.input.maps)  # once: the crops, the scoring and `attribute` use this one
    ids, crops = pipeline.shard_crops(shard, sm.input.crops, sm.input.index)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    preprocessing = preprocessing_for(p.model["source"])
    boxes = pipeline.shard_boxes(sm.input.index, ids) if "boxes" in metric.needs else None
    masks = None
    if "masks" in metric.needs:  # ground-truth masks (data.source shapes)
        from layersweep.shapes import masks_by_id

        masks = masks_by_id(sm.input.masks, sm.input.index, ids)
    attribute = None
    if "attribution" in metric.needs:  # the metric recomputes the shard's method on perturbed inputs
        attribute = pipeline.method_on_inputs(model, sm.input, shard, p.attribution, seed=p.seed, device=device,
                                              preprocessing=preprocessing)
    rescaled = {"r": p.r, "rtol": p.rtol} if p.r is not None else {}  # rule metric_rescaled
    table = score_metric_shard(metric.name, model, crops, shard, crop_ids=ids, options=p.options, **rescaled,
                               mask_space=p.mask_space, batch_size=p.batch_size,
                               constant_eps=p.constant_eps, device=device, precision=p.precision, seed=p.seed,
                               boxes=boxes, attribute=attribute, preprocessing=preprocessing, masks=masks)
    write_parquet(table, sm.output[0])


run_script(snakemake, main)
