from layersweep.script_runner import run_script


def main(sm):
    from layersweep.data import make_split

    if sm.params.source == "imagenet":
        from layersweep.imagenet import make_imagenet_split

        settings = dict(sm.params.imagenet)
        make_imagenet_split(settings.pop("root"), sm.wildcards.split, sm.params.crop_size, sm.output.crops,
                            sm.output.index, settings)
        return
    make_split(sm.params.voc_dir, sm.wildcards.split, sm.params.crop_size, sm.output.crops, sm.output.index,
               samples=sm.params.samples)


run_script(snakemake, main)
