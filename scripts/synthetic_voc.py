from layersweep.script_runner import run_script


def main(sm):
    from layersweep.synthetic import write_synthetic_voc

    write_synthetic_voc(sm.output[0], **sm.params.synthetic)


run_script(snakemake, main)
