from layersweep.script_runner import run_script


def main(sm):
    from layersweep.shapes import ShapesSpec, make_shapes_splits

    spec = dict(sm.params.spec)
    spec["thresholds"] = tuple(spec["thresholds"])
    spec["size_ranges"] = tuple(tuple(r) for r in spec["size_ranges"])
    make_shapes_splits(ShapesSpec(**spec), {sm.wildcards.split: (sm.output.crops, sm.output.index, sm.output.masks)})


run_script(snakemake, main)
