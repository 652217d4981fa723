from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures, pipeline
    from layersweep.attribution import attribute_layers
    from layersweep.data import read_split
    from layersweep.preprocess import preprocessing_for, to_model_input

    p = sm.params
    crops, index = read_split(sm.input.crops, sm.input.index, mmap_mode="r")
    ids = pipeline.example_crop_ids(index, p.example_crops, p.seed)
    sel, labels = pipeline.select(crops, index, ids)
    model, device = pipeline.fitted_model(sm.input, p.device, p.model)
    prep = preprocessing_for(p.model["source"])
    import torch
    base = to_model_input(pipeline.baselines(sm.input, p.n_baselines, p.seed), device, prep)
    targets = torch.as_tensor(labels, device=device)
    # -1 is the model input: the report's figure 2 sets features.18 (figures.fig2_layer) beside the input map
    from layersweep.attribution.sites import site_table
    layer = site_table(model).index_of(p.layer, key="figures.fig2_layer")
    maps = attribute_layers(model, to_model_input(sel, device, prep), targets, methods=["deepliftshap"],
                            layers=[layer, -1], baselines=base, max_pairs=p.max_pairs)["deepliftshap"]
    figures.fig2(sel, ids, maps[layer].cpu().numpy(), maps[-1].cpu().numpy(), sm.output.pdf, sm.output.png,
                 sm.output.table, layer_name=site_table(model)[layer].label, **p.plot)


run_script(snakemake, main)
