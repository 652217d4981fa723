from layersweep.script_runner import run_script


def main(sm):
    from layersweep import pipeline
    from layersweep.preprocess import preprocessing_for
    from layersweep.targets import make_top1_index

    p = sm.params
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    make_top1_index(model, sm.input.crops, sm.input.index, sm.output.index, samples=p.samples,
                    n_images=p.n_images, seed=p.seed, device=device, batch_size=p.batch_size,
                    preprocessing=preprocessing_for(p.model["source"]))


run_script(snakemake, main)
