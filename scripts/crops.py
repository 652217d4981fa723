from layersweep.script_runner import run_script


def main(sm):
    from layersweep.data import make_split

    make_split(sm.params.voc_dir, sm.wildcards.split, sm.params.crop_size, sm.output.crops, sm.output.index,
               samples=sm.params.samples)


run_script(snakemake, main)
