import numpy as np

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.data import read_split
    from layersweep.device import resolve_device
    from layersweep.io import atomic_path
    from layersweep.model import build_model, frozen_features
    from layersweep.preprocess import preprocessing_for

    spec = sm.params.model
    crops, _ = read_split(sm.input.crops, sm.input.index)
    model = build_model(spec["init"], sm.input.get("weights") or None, arch=spec["arch"], source=spec["source"],
                        seed=spec["seed"])
    feats = frozen_features(model, crops, sm.wildcards.train, batch_size=sm.params.batch_size,
                            device=resolve_device(sm.params.device, claim_gpu=True),
                            preprocessing=preprocessing_for(spec["source"]), arch=spec["arch"])
    with atomic_path(sm.output[0]) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)


run_script(snakemake, main)
