import yaml

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import atomic_path

    with atomic_path(sm.output[0]) as tmp:
        tmp.write_text(yaml.safe_dump(dict(sm.params.config), sort_keys=False))


run_script(snakemake, main)
