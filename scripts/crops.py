from layersweep.script_runner import run_script


def main(sm):
    from layersweep.data import build_split, write_split

    crops, index = build_split(sm.params.voc_dir, sm.wildcards.split, sm.params.crop_size)
    write_split(crops, index, sm.output.crops, sm.output.index)


run_script(snakemake, main)
