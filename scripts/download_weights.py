from layersweep.script_runner import run_script


def main(sm):
    from layersweep.download import fetch

    spec = sm.params.spec
    fetch(spec["mirrors"], sm.output[0], sha256_prefix=spec["sha256_prefix"], config_key="model.weights",
          hint=f"a local copy of {spec['file']} (model.checkpoints.{spec['key']})")


run_script(snakemake, main)
