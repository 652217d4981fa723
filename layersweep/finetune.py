"""Full fine-tuning (`model.train: full`): every parameter of the VGG trained on the crops themselves, as the
ground-truth paper trains its classifier (Domeniconi et al., ICPR 2026): AdamW (model.lr, model.weight_decay),
model.batch_size, up to model.max_epochs, early stopping on the val loss after model.patience epochs without a
new best, the best state kept. The alternative to `head` / `classifier` (layersweep.model), which fit the
classifier on cached frozen features.

`model.width` (< 1 only with `model.init: random`) scales every conv and fully connected width of the VGG, so
that an offline CPU set-up trains in minutes; the layer indices (features.N) are those of model.arch. Such a
narrow classifier has no dropout and PyTorch's default Linear init (build_vgg).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from .errors import LayersweepError
from .model import EarlyStopping, history_frame
from .preprocess import TORCHVISION, Preprocessing, to_model_input


def build_vgg(arch: str, n_classes: int, *, width: float = 1.0, init: str = "random", weights_path=None,
              seed: int = 0) -> nn.Module:
    """torchvision's `arch` (vgg11 ... vgg19_bn) with every width scaled by `width` and an n_classes output.
    init 'imagenet' loads torchvision's weights from weights_path (width 1 only), then replaces the last
    layer; 'random' is torchvision's init, seeded."""
    from .model import VGG_CFG, build_model, check_arch

    check_arch(arch, "torchvision")
    if not (isinstance(width, (int, float)) and 0 < width <= 1):
        raise LayersweepError(f"config key 'model.width' must be a number in (0, 1], not {width!r}.")
    if init == "imagenet":
        if width != 1:
            raise LayersweepError(f"config key 'model.width' is {width}; pretrained weights exist at width 1 only "
                                  f"(set model.init: random, or model.width: 1).")
        return build_model("imagenet", weights_path, arch=arch, seed=seed, n_classes=n_classes)
    torch.manual_seed(seed)
    cfg = [v if v == "M" else max(1, int(round(v * width)))
           for v in torchvision.models.vgg.cfgs[VGG_CFG[arch.removesuffix("_bn")]]]
    features = torchvision.models.vgg.make_layers(cfg, batch_norm=arch.endswith("_bn"))
    model = torchvision.models.VGG(features, num_classes=n_classes, init_weights=True)
    hidden = max(1, int(round(4096 * width)))
    if hidden != 4096:
        # a narrow VGG trained from scratch: PyTorch's default Linear init and no dropout, with which it starts
        # learning within a few epochs (torchvision's N(0, 0.01) init and dropout 0.5 kept the loss at ln 6 for
        # the first 160 steps of the CPU set-up)
        last = cfg[-2] if cfg[-1] == "M" else cfg[-1]
        model.classifier = nn.Sequential(nn.Linear(last * 7 * 7, hidden), nn.ReLU(True),
                                         nn.Linear(hidden, hidden), nn.ReLU(True), nn.Linear(hidden, n_classes))
    return model.eval()


@torch.no_grad()
def _loss_and_logits(model, crops, labels, batch_size, device, preprocessing):
    model.eval()
    logits = [model(to_model_input(crops[s:s + batch_size], device, preprocessing)).float()
              for s in range(0, len(crops), batch_size)]
    logits = torch.cat(logits) if logits else torch.zeros((0, 1), device=device)
    y = torch.as_tensor(labels, device=device).long()
    return nn.functional.cross_entropy(logits, y).item(), logits


def finetune(model: nn.Module, train_crops, train_labels, val_crops, val_labels, *, lr: float,
             weight_decay: float, batch_size: int, max_epochs: int, patience: int, seed: int, device,
             preprocessing: Preprocessing = TORCHVISION, progress: bool = True):
    """Train every parameter (module docstring). Crops uint8 (N, S, S, 3). Returns (best state dict, history
    with epoch, train_loss, val_loss, val_accuracy, seconds, best)."""
    if len(train_crops) == 0 or len(val_crops) == 0:
        raise LayersweepError("the train or val split has no samples; check config key 'data'.")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    y_train = torch.as_tensor(np.array(train_labels), device=device).long()
    stopper, rows = EarlyStopping(patience), []
    for epoch in tqdm(range(1, max_epochs + 1), desc="fine-tune", disable=not progress):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_crops), generator=gen).numpy()
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            x = to_model_input(train_crops[idx], device, preprocessing)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_loss, logits = _loss_and_logits(model, val_crops, val_labels, 256, device, preprocessing)
        val_acc = (logits.argmax(1).cpu().numpy() == np.asarray(val_labels)).mean()
        rows.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss,
                     "val_accuracy": float(val_acc), "seconds": time.perf_counter() - t0})
        logging.getLogger("layersweep").info("epoch %d: train loss %.4f, val loss %.4f, val accuracy %.3f (%.0f s)",
                                             *[rows[-1][k] for k in ("epoch", "train_loss", "val_loss",
                                                                     "val_accuracy", "seconds")])
        if stopper.step(val_loss, model):
            break
    return stopper.best_state, history_frame(rows)


@torch.no_grad()
def predictions(model, crops, labels, crop_ids, *, device, preprocessing: Preprocessing = TORCHVISION,
                batch_size: int = 256) -> pd.DataFrame:
    """crop_id, label, pred, prob (softmax at the label), correct: the model on every crop."""
    _, logits = _loss_and_logits(model, crops, labels, batch_size, device, preprocessing)
    prob = torch.softmax(logits, 1)
    labels = np.asarray(labels)
    pred = logits.argmax(1).cpu().numpy()
    return pd.DataFrame({"crop_id": list(map(str, crop_ids)), "label": labels, "pred": pred,
                         "prob": prob[torch.arange(len(labels)), torch.as_tensor(labels).long()].cpu().numpy(),
                         "correct": pred == labels})


def accuracy_summary(preds: pd.DataFrame, class_names) -> dict:
    per_class = {}
    for c, name in enumerate(class_names):
        rows = preds[preds["label"] == c]
        per_class[name] = {"n": int(len(rows)), "accuracy": float(rows["correct"].mean()) if len(rows) else None}
    return {"n": int(len(preds)), "n_correct": int(preds["correct"].sum()),
            "accuracy": float(preds["correct"].mean()) if len(preds) else None,
            "chance": 1.0 / len(class_names), "per_class": per_class}


def save_full_checkpoint(path, model: nn.Module, state: dict, *, arch: str, init: str, seed: int, n_classes: int,
                         width: float) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "train": "full", "arch": arch, "init": init, "seed": seed,
                    "n_classes": n_classes, "width": width}, tmp)


def load_full_checkpoint(ckpt: dict, checkpoint) -> nn.Module:
    """The fine-tuned model of a `train: full` checkpoint (the dict torch.load gave), in eval mode."""
    try:
        model = build_vgg(ckpt["arch"], int(ckpt["n_classes"]), width=float(ckpt["width"]), init="random",
                          seed=int(ckpt["seed"]))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError):
        raise LayersweepError(f"the model checkpoint '{checkpoint}' is not a complete full fine-tuning checkpoint; "
                              f"delete it and rerun the finetune rule.") from None
    return model.eval()
