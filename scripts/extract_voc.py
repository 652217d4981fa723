from pathlib import Path

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.download import extract_tar

    out = Path(sm.output[0])
    extract_tar(Path(sm.input[0]), out.parent, marker=out.name)


run_script(snakemake, main)
