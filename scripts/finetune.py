import json
import logging

from layersweep.script_runner import run_script


def main(sm):
    import torch

    from layersweep.data import read_split
    from layersweep.device import resolve_device
    from layersweep.finetune import (accuracy_summary, build_vgg, finetune, predictions, save_full_checkpoint)
    from layersweep.io import atomic_path, write_parquet
    from layersweep.preprocess import preprocessing_for

    p = sm.params
    spec = p.model
    device = resolve_device(p.device, claim_gpu=True)
    torch.set_num_threads(max(1, sm.threads))
    if p.source == "shapes":
        from layersweep.shapes import CLASSES as class_names
    else:
        from layersweep.voc import VOC_CLASSES as class_names
    data = {s: read_split(sm.input[f"{s}_crops"], sm.input[f"{s}_index"]) for s in ("train", "val", "test")}
    labels = {s: idx["label"].to_numpy() for s, (_, idx) in data.items()}
    pre = preprocessing_for(spec["source"])
    model = build_vgg(spec["arch"], len(class_names), width=p.width, init=spec["init"],
                      weights_path=sm.input.get("weights") or None, seed=spec["seed"])
    best, history = finetune(model, data["train"][0], labels["train"], data["val"][0], labels["val"], lr=p.lr,
                             weight_decay=p.weight_decay, batch_size=p.batch_size, max_epochs=p.max_epochs,
                             patience=p.patience, seed=spec["seed"], device=device, preprocessing=pre)
    model.load_state_dict(best)
    preds = predictions(model, data["test"][0], labels["test"], data["test"][1]["crop_id"], device=device,
                        preprocessing=pre)
    report = accuracy_summary(preds, class_names)
    report.update(epochs=int(len(history)), best_epoch=int(history.loc[history["best"], "epoch"].iloc[0]),
                  seconds=float(history["seconds"].sum()), device=str(device), threads=torch.get_num_threads(),
                  cpu_capability=torch.backends.cpu.get_cpu_capability(), width=p.width, arch=spec["arch"],
                  init=spec["init"])
    logging.getLogger("layersweep").info("test accuracy %.3f after %d epochs (%.0f s)", report["accuracy"],
                                         len(history), report["seconds"])
    save_full_checkpoint(sm.output.checkpoint, model, best, arch=spec["arch"], init=spec["init"], seed=spec["seed"],
                         n_classes=len(class_names), width=p.width)
    write_parquet(history, sm.output.history)
    write_parquet(preds, sm.output.predictions)
    with atomic_path(sm.output.accuracy) as tmp:
        tmp.write_text(json.dumps(report, indent=2))


run_script(snakemake, main)
