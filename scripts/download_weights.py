from layersweep.script_runner import run_script


def main(sm):
    from layersweep.download import fetch

    fetch(sm.params.mirrors, sm.output[0], sha256_prefix=sm.params.sha256_prefix, config_key="model.weights",
          hint="a local copy of torchvision's vgg11-8a719046.pth")


run_script(snakemake, main)
