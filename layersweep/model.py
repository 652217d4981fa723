"""VGG11 with a 20-class head, cached-feature head training and test accuracy."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.models import vgg11
from tqdm.auto import tqdm

from .errors import LayersweepError
from .preprocess import to_model_input

N_CLASSES = 20


def build_vgg11(init: str = "imagenet", weights_path: str | Path | None = None, *, seed: int = 0,
                n_classes: int = N_CLASSES) -> nn.Module:
    """torchvision VGG11, ImageNet weights read from `weights_path` (no hub) or seeded random init,
    with `classifier[-1]` replaced by Linear(4096, n_classes). Returned in eval mode."""
    torch.manual_seed(seed)  # random init (and the new head) is then the same on every run and node
    model = vgg11(weights=None)
    if init == "imagenet":
        if weights_path is None or not Path(weights_path).is_file():
            raise LayersweepError(f"the VGG11 weights file '{weights_path}' does not exist; set config key 'model.weights' to a local copy of vgg11-8a719046.pth.")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # a truncated or foreign file: say which file, not a stack trace
            raise LayersweepError(f"the VGG11 weights file '{weights_path}' cannot be loaded ({type(exc).__name__}); point config key 'model.weights' at torchvision's vgg11-8a719046.pth.") from None
    elif init != "random":
        raise LayersweepError(f"config key 'model.init' has the unknown value '{init}'; use 'imagenet' or 'random'.")
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, n_classes)
    return model.eval()


def trainable_part(model: nn.Module, train: str) -> nn.Module:
    """The module that is fitted: the new last layer ('head') or the whole classifier ('classifier')."""
    if train == "head":
        return model.classifier[-1]
    if train == "classifier":
        return model.classifier
    raise LayersweepError(f"config key 'model.train' has the unknown value '{train}'; use 'head' or 'classifier'.")


@torch.no_grad()
def frozen_features(model: nn.Module, crops: np.ndarray, train: str, *, batch_size: int, device,
                    progress: bool = True) -> np.ndarray:
    """Input of the trainable part for every crop (eval mode), computed once and cached.

    'head': the 4096-d fc7 output; 'classifier': the flattened 25088-d pool5 output.
    Everything before the trainable part is frozen, so training never needs the conv stack again.
    """
    model = model.eval().to(device)
    stem = model.classifier[:-1] if train == "head" else nn.Identity()
    out = []
    for start in tqdm(range(0, len(crops), batch_size), desc=f"features ({train})", disable=not progress):
        x = to_model_input(crops[start:start + batch_size], device)
        h = torch.flatten(model.avgpool(model.features(x)), 1)
        out.append(stem(h).float())
    if not out:
        return np.zeros((0, 4096 if train == "head" else 25088), np.float32)
    return torch.cat(out).cpu().numpy()


def train_on_features(part: nn.Module, feats_train, y_train, feats_val, y_val, *, lr: float, batch_size: int,
                      max_epochs: int, patience: int, seed: int, device, progress: bool = True):
    """Cross-entropy, Adam, early stopping on val loss; returns (best state dict, history DataFrame)."""
    if len(feats_train) == 0 or len(feats_val) == 0:
        raise LayersweepError("the train or val split has no crops; check config key 'data.voc_root'.")
    gen = torch.Generator().manual_seed(seed)
    part = part.to(device)
    xt, yt = torch.tensor(feats_train, device=device), torch.tensor(y_train, device=device).long()
    xv, yv = torch.tensor(feats_val, device=device), torch.tensor(y_val, device=device).long()
    opt = torch.optim.Adam(part.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    best_loss, best_state, since_best, rows = float("inf"), None, 0, []
    for epoch in tqdm(range(1, max_epochs + 1), desc="train", disable=not progress):
        t0 = time.perf_counter()
        part.train()
        order = torch.randperm(len(xt), generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(part(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        part.eval()
        with torch.no_grad():
            logits = part(xv)
            val_loss = loss_fn(logits, yv).item()
            val_acc = (logits.argmax(1) == yv).float().mean().item()
        rows.append({"epoch": epoch, "train_loss": total.item() / len(xt), "val_loss": val_loss,
                     "val_accuracy": val_acc, "seconds": time.perf_counter() - t0})
        if val_loss < best_loss - 1e-7:
            best_loss, best_state, since_best = val_loss, copy.deepcopy(part.state_dict()), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    history = pd.DataFrame(rows)
    history["best"] = history["val_loss"] == history["val_loss"].min()
    return best_state, history


@torch.no_grad()
def accuracy_report(part: nn.Module, feats, labels, class_names: list[str], device) -> dict:
    """Overall and per-class accuracy of the fitted part on cached features."""
    part = part.eval().to(device)
    pred = part(torch.as_tensor(feats, device=device)).argmax(1).cpu().numpy()
    labels = np.asarray(labels)
    per_class = {}
    for c, name in enumerate(class_names):
        mask = labels == c
        per_class[name] = {"n": int(mask.sum()),
                           "accuracy": float((pred[mask] == c).mean()) if mask.any() else None}
    return {"n": int(len(labels)), "accuracy": float((pred == labels).mean()) if len(labels) else None,
            "chance": 1.0 / len(class_names), "per_class": per_class}


def save_checkpoint(path, part: nn.Module, state: dict, *, init: str, train: str, seed: int) -> None:
    from .io import atomic_path
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "init": init, "train": train, "seed": seed}, tmp)


def load_model(checkpoint, *, weights_path=None, device="cpu") -> nn.Module:
    """The fine-tuned model: backbone as built by build_vgg11, fitted part from the checkpoint."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        init, train, seed = ckpt["init"], ckpt["train"], ckpt["seed"]
    except Exception:
        raise LayersweepError(f"the model checkpoint '{checkpoint}' is missing or corrupt; rerun the train_head rule.") from None
    model = build_vgg11(init, weights_path, seed=seed)
    trainable_part(model, train).load_state_dict(ckpt["state_dict"])
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval().to(device)
