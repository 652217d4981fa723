from layersweep.script_runner import run_script


def main(sm):
    from layersweep.download import fetch

    spec = sm.params.spec
    fetch(spec["mirrors"], sm.output[0], md5=spec["md5"], config_key="data.voc_root",
          hint="a directory holding VOCdevkit/VOC2007")


run_script(snakemake, main)
