from layersweep.script_runner import run_script


def main(sm):
    from layersweep import figures, pipeline
    from layersweep.data import read_split
    from layersweep.layers import arch_layer_specs

    p = sm.params
    crops, index = read_split(sm.input.crops, sm.input.index, mmap_mode="r")
    crop, _ = pipeline.select(crops, index, pipeline.example_crop_ids(index, 1, p.seed))
    figures.fig3(crop[0], arch_layer_specs(**p.arch), p.layers, sm.output.pdf, sm.output.png,
                 sm.output.table, **p.plot)


run_script(snakemake, main)
