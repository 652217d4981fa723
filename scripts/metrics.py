from layersweep.script_runner import run_script


def main(sm):
    from layersweep import pipeline
    from layersweep.io import write_parquet
    from layersweep.metrics import score_shard
    from layersweep.preprocess import preprocessing_for

    p = sm.params
    ids, crops = pipeline.shard_crops(sm.input.maps, sm.input.crops, sm.input.index)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    table = score_shard(model, crops, sm.input.maps, crop_ids=ids, mask_space=p.mask_space,
                        curve_points=p.curve_points, blur_kernel=p.blur_kernel, blur_sigma=p.blur_sigma,
                        batch_size=p.batch_size, constant_eps=p.constant_eps, device=device,
                        precision=p.precision, preprocessing=preprocessing_for(p.model["source"]),
                        insertion_start=p.insertion_start)
    write_parquet(table, sm.output[0])


run_script(snakemake, main)
