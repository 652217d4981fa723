import numpy as np

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.data import read_split
    from layersweep.device import resolve_device
    from layersweep.io import atomic_path
    from layersweep.model import build_vgg11, frozen_features

    crops, _ = read_split(sm.input.crops, sm.input.index)
    model = build_vgg11(sm.params.init, sm.input.get("weights") or None, seed=sm.params.seed)
    feats = frozen_features(model, crops, sm.wildcards.train, batch_size=sm.params.batch_size,
                            device=resolve_device(sm.params.device, claim_gpu=True))
    with atomic_path(sm.output[0]) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)


run_script(snakemake, main)
