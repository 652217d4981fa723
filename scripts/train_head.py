import json
import logging

import numpy as np
import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.device import resolve_device
    from layersweep.errors import LayersweepError
    from layersweep.io import atomic_path, write_parquet
    from layersweep.model import (accuracy_report, build_model, save_checkpoint, train_on_features,
                                  trainable_part)
    from layersweep.voc import VOC_CLASSES

    p = sm.params
    device = resolve_device(p.device, claim_gpu=True)
    feats, labels = {}, {}
    for split, f_path, i_path in zip(["train", "val", "test"], sm.input.features, sm.input.index):
        try:
            feats[split] = np.load(f_path)
        except (OSError, ValueError):
            raise LayersweepError(f"the cached features '{f_path}' are missing or corrupt; delete it and rerun.") from None
        labels[split] = pd.read_parquet(i_path)["label"].to_numpy()
    spec = p.model
    model = build_model(spec["init"], sm.input.get("weights") or None, arch=spec["arch"], source=spec["source"],
                        seed=spec["seed"])
    part = trainable_part(model, p.train, spec["arch"])
    best, history = train_on_features(part, feats["train"], labels["train"], feats["val"], labels["val"],
                                      lr=p.lr, batch_size=p.batch_size, max_epochs=p.max_epochs,
                                      patience=p.patience, seed=spec["seed"], device=device)
    part.load_state_dict(best)
    report = accuracy_report(part, feats["test"], labels["test"], list(VOC_CLASSES), device)
    report["epochs"] = int(len(history))
    report["seconds_per_epoch"] = float(history["seconds"].mean())
    logging.getLogger("layersweep").info("test accuracy %.3f after %d epochs", report["accuracy"], len(history))
    save_checkpoint(sm.output.checkpoint, part, best, init=spec["init"], train=p.train, seed=spec["seed"],
                    arch=spec["arch"])
    write_parquet(history, sm.output.history)
    with atomic_path(sm.output.accuracy) as tmp:
        tmp.write_text(json.dumps(report, indent=2))


run_script(snakemake, main)
