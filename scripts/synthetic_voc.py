import json

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.synthetic import write_synthetic_voc
    from layersweep.io import atomic_path

    write_synthetic_voc(sm.params.root, **sm.params.synthetic)
    with atomic_path(sm.output[0]) as tmp:
        tmp.write_text(json.dumps(sm.params.synthetic))


run_script(snakemake, main)
