from layersweep.script_runner import run_script


def main(sm):
    import pandas as pd

    from layersweep import pipeline
    from layersweep.data import read_split
    from layersweep.groundtruth import degradation_table
    from layersweep.io import write_parquet
    from layersweep.preprocess import preprocessing_for
    from layersweep.shapes import masks_by_id

    p = sm.params
    crops, index = read_split(sm.input.crops, sm.input.index)
    preds = pd.read_parquet(sm.input.predictions)
    correct = set(preds.loc[preds["correct"], "crop_id"].astype(str))
    from layersweep.data import eval_order

    ids = [c for c in eval_order(index, p.seed) if c in correct][: p.n_samples]
    chosen, labels = pipeline.select(crops, index, ids)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    table = degradation_table(model, chosen, masks_by_id(sm.input.masks, sm.input.index, ids), ids, labels,
                              p.metrics, n_steps=p.n_steps, seed=p.seed, device=device,
                              score_kwargs=dict(mask_space=p.mask_space, batch_size=p.batch_size,
                                                constant_eps=p.constant_eps,
                                                preprocessing=preprocessing_for(p.model["source"])))
    write_parquet(table, sm.output[0])


run_script(snakemake, main)
