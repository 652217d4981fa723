"""The model stage: a torchvision CNN of `model.arch` (its adapter in layersweep/models/ says where its head
is) or TorchRay's VOC VGG16, with a new 20-class head; cached-feature head training and test accuracy."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from .errors import LayersweepError
from .preprocess import TORCHVISION, Preprocessing, to_model_input

from .models import ARCHS, adapter_for, build_torchvision, head_of, replace_head

N_CLASSES = 20
SOURCES = ("torchvision", "torchray_voc", "torchvision_imagenet")  # the last: ImageNet weights, 1,000 classes as they are
VGG_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}  # torchvision.models.vgg.cfgs
TORCHRAY_ARCH = "vgg16"  # TorchRay's VOC model is a VGG16 converted from Caffe
# TorchRay's classifier holds only the three Linear layers (no ReLU/Dropout modules between them)
TORCHRAY_CLASSIFIER_KEYS = {"0": "0", "2": "3", "4": "6"}


def check_arch(arch: str, source: str = "torchvision") -> None:
    """One sentence naming the key if `model.arch` / `model.source` is unknown or the pair does not exist."""
    if source not in SOURCES:
        raise LayersweepError(f"config key 'model.source' has the unknown value '{source}'; use one of {', '.join(SOURCES)}.")
    adapter_for(arch)  # one sentence naming model.arch if no adapter knows it
    if source == "torchray_voc" and arch != TORCHRAY_ARCH:
        raise LayersweepError(f"config key 'model.arch' is '{arch}' but 'model.source: torchray_voc' is TorchRay's VGG16; set model.arch to vgg16.")


def check_input_size(arch: str, crop_size: int) -> None:
    """A ViT takes inputs of its own `image_size` only (its position embedding has one token per patch)."""
    with torch.device("meta"):
        side = getattr(build_torchvision(arch), "image_size", None)
    if side is not None and int(crop_size) != int(side):
        raise LayersweepError(f"config key 'data.crop_size' is {crop_size}, but model.arch '{arch}' takes {side}-px "
                              f"inputs only; set data.crop_size to {side}.")


def checkpoint_key(arch: str, source: str) -> str:
    """The entry of config key 'model.checkpoints' that holds the pretrained weights of this model."""
    return "torchray_voc" if source == "torchray_voc" else arch


def build_architecture(arch: str = "vgg11", source: str = "torchvision", n_classes: int = 1000) -> nn.Module:
    """The untrained network, torchvision's default init (TorchRay's: ceil-mode max-pooling, as in Caffe)."""
    check_arch(arch, source)
    model = build_torchvision(arch, n_classes)  # the adapter's own builder for the archs torchvision lacks
    if source == "torchray_voc":
        for m in model.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
    return model


def build_features(arch: str = "vgg11", source: str = "torchvision") -> nn.Sequential:
    """A VGG's `features` alone, without the 120M-parameter classifier (TorchRay's conversion checks)."""
    check_arch(arch, source)
    if adapter_for(arch).family != "vgg":
        raise LayersweepError(f"model.arch '{arch}' is not a VGG; it has no `features` chain.")
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[VGG_CFG[arch.removesuffix("_bn")]],
                                                  batch_norm=arch.endswith("_bn"))
    if source == "torchray_voc":
        for m in features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
    return features


def convert_torchray_state(state: dict, path) -> dict:
    """TorchRay's VGG16 state dict (a Caffe conversion) in torchvision's layout.

    Its first conv reads BGR: the input channels of features.0.weight are swapped so that the model reads
    RGB; its classifier is numbered 0/2/4 (torchvision: 0/3/6, with ReLU/Dropout between); Caffe's
    fully connected weights may be stored as (out, in, 1, 1) or (out, 512, 7, 7) and are flattened.
    """
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            if len(parts) != 3 or parts[1] not in TORCHRAY_CLASSIFIER_KEYS:
                raise LayersweepError(f"the TorchRay weights file '{path}' has the key '{key}', not one of TorchRay's classifier.0/2/4 (is it a torchvision checkpoint? then set model.source to torchvision).")
            key = f"classifier.{TORCHRAY_CLASSIFIER_KEYS[parts[1]]}.{parts[2]}"
            if parts[2] == "weight":
                value = value.reshape(value.shape[0], -1)
        elif key == "features.0.weight":
            value = value[:, [2, 1, 0]]  # BGR -> RGB
        out[key] = value
    return out


def load_torchray_state(model: nn.Module, state: dict, path) -> nn.Module:
    """Load TorchRay's VOC VGG16 state dict (its own layout, see convert_torchray_state) into a torchvision
    VGG16 skeleton, and set its max-pools to Caffe's ceil mode, as TorchRay's own loader does."""
    try:
        model.load_state_dict(convert_torchray_state(state, path))
    except RuntimeError:
        raise LayersweepError(f"the TorchRay weights file '{path}' does not fit this VGG16 (wrong keys or shapes); point config key 'model.weights' at vgg16_voc-b050e8c3.pth.tar.") from None
    for m in model.features:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
    return model


def _read_state(weights_path, arch: str, source: str) -> dict:
    if weights_path is None or not Path(weights_path).is_file():
        raise LayersweepError(f"the weights file '{weights_path}' does not exist; set config key 'model.weights' to a local copy of the {arch} ({source}) weights.")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which file, not a stack trace
        raise LayersweepError(f"the weights file '{weights_path}' cannot be loaded ({type(exc).__name__}); point config key 'model.weights' at the {arch} ({source}) weights.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise LayersweepError(f"the weights file '{weights_path}' holds no state dict of tensors; point config key 'model.weights' at the {arch} ({source}) weights.")
    if adapter_for(arch).family != "vgg":
        return state  # load_state_dict names the file if keys or shapes do not fit
    has_bn = any(k.endswith("running_mean") for k in state)
    if has_bn != arch.endswith("_bn"):
        other = arch + "_bn" if has_bn else arch.removesuffix("_bn")
        raise LayersweepError(f"the weights file '{weights_path}' holds a VGG {'with' if has_bn else 'without'} BatchNorm but config key 'model.arch' is '{arch}'; set model.arch to '{other}' or point model.weights at {arch} weights.")
    n_convs = sum(1 for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
    expected = sum(v != "M" for v in torchvision.models.vgg.cfgs[VGG_CFG[arch.removesuffix("_bn")]])
    if n_convs != expected:
        raise LayersweepError(f"the weights file '{weights_path}' holds a VGG with {n_convs} conv layers but config key 'model.arch' is '{arch}' ({expected}); set model.arch to match the file.")
    return state


def build_model(init: str = "imagenet", weights_path: str | Path | None = None, *, arch: str = "vgg11",
                source: str = "torchvision", seed: int = 0, n_classes: int = N_CLASSES) -> nn.Module:
    """The VGG of `arch` with pretrained weights read from `weights_path` (no hub) or a seeded random init.

    torchvision: ImageNet weights, `classifier[-1]` replaced by a new Linear(4096, n_classes) (the head that
    is trained). torchray_voc: TorchRay's VGG16 fine-tuned on VOC 2007, used as it is (no head training).
    Returned in eval mode.
    """
    check_arch(arch, source)
    if init not in ("imagenet", "random"):
        raise LayersweepError(f"config key 'model.init' has the unknown value '{init}'; use 'imagenet' or 'random'.")
    torch.manual_seed(seed)  # random init (and the new head) is then the same on every run and node
    if source == "torchray_voc":
        state = None if init == "random" else _read_state(weights_path, arch, source)
        if state is not None:
            convert_torchray_state(state, weights_path)  # its keys are checked before the 138M-parameter build
        model = build_architecture(arch, source, n_classes=n_classes)
        if state is not None:
            load_torchray_state(model, state, weights_path)
        return model.eval()
    state = _read_state(weights_path, arch, source) if init == "imagenet" else None  # checked before building
    model = build_architecture(arch, source)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise LayersweepError(f"the weights file '{weights_path}' does not fit torchvision's {arch} (wrong keys or shapes); point config key 'model.weights' at torchvision's {arch} weights.") from None
    if source == "torchvision_imagenet":  # the ImageNet classifier as it is: no new head
        return model.eval()
    replace_head(model, arch, n_classes)
    return model.eval()


def build_vgg11(init: str = "imagenet", weights_path: str | Path | None = None, *, seed: int = 0,
                n_classes: int = N_CLASSES) -> nn.Module:
    """torchvision's VGG11 with a new 20-class head (build_model with arch='vgg11')."""
    return build_model(init, weights_path, arch="vgg11", seed=seed, n_classes=n_classes)


def trainable_part(model: nn.Module, train: str, arch: str = "vgg11") -> nn.Module:
    """The module that is fitted: the new last layer ('head') or a VGG's whole classifier ('classifier')."""
    if train == "head":
        return head_of(model, arch)
    if train == "classifier":
        if adapter_for(arch).family != "vgg":
            raise LayersweepError(f"config key 'model.train' is 'classifier', which only a VGG has; model.arch '{arch}' trains its 'head'.")
        return model.classifier
    raise LayersweepError(f"config key 'model.train' has the unknown value '{train}'; use 'head' or 'classifier'.")


@torch.no_grad()
def frozen_features(model: nn.Module, crops: np.ndarray, train: str, *, batch_size: int, device,
                    progress: bool = True, preprocessing: Preprocessing = TORCHVISION,
                    arch: str = "vgg11") -> np.ndarray:
    """Input of the trainable part for every crop (eval mode), computed once and cached.

    On a VGG, 'head': the 4096-d fc7 output; 'classifier': the flattened 25088-d pool5 output; on other
    archs the input of the head Linear (resnet18: 512-d). Everything before the trainable part is frozen, so
    training never needs the conv stack again.
    """
    model = model.eval().to(device)
    part = trainable_part(model, train, arch)
    first = part[0] if isinstance(part, nn.Sequential) else part
    captured = []
    hook = part.register_forward_pre_hook(lambda module, args: captured.append(torch.flatten(args[0], 1).float()))
    try:
        for start in tqdm(range(0, len(crops), batch_size), desc=f"features ({train})", disable=not progress):
            model(to_model_input(crops[start:start + batch_size], device, preprocessing))
    finally:
        hook.remove()
    if not captured:
        return np.zeros((0, first.in_features), np.float32)
    return torch.cat(captured).cpu().numpy()


class EarlyStopping:
    """Early stopping on val loss: keeps a copy of the best state; `step` says whether to stop. Shared by the
    head's training on cached features and the full fine-tuning (finetune.py)."""

    def __init__(self, patience: int):
        self.patience, self.best_loss, self.best_state, self.since_best = patience, float("inf"), None, 0

    def step(self, val_loss: float, module: nn.Module) -> bool:
        if val_loss < self.best_loss - 1e-7:
            self.best_loss, self.best_state, self.since_best = val_loss, copy.deepcopy(module.state_dict()), 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per epoch, `best` marking the epoch whose state was kept."""
    history = pd.DataFrame(rows)
    history["best"] = history["val_loss"] == history["val_loss"].min()
    return history


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
    stopper, rows = EarlyStopping(patience), []
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
        if stopper.step(val_loss, part):
            break
    return stopper.best_state, history_frame(rows)


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


def save_checkpoint(path, part: nn.Module, state: dict, *, init: str, train: str, seed: int,
                    arch: str = "vgg11") -> None:
    from .io import atomic_path
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "init": init, "train": train, "seed": seed, "arch": arch}, tmp)


def _frozen(model: nn.Module, device) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval().to(device)


def load_model(checkpoint, *, weights_path=None, device="cpu") -> nn.Module:
    """The fine-tuned model: backbone as built by build_model, fitted part from the checkpoint."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        init, train, seed = ckpt["init"], ckpt["train"], ckpt["seed"]
        arch = ckpt.get("arch", "vgg11")  # checkpoints written before model.arch existed are VGG11's
    except Exception:
        raise LayersweepError(f"the model checkpoint '{checkpoint}' is missing or corrupt; rerun the train_head rule.") from None
    if train == "full":  # model.train full: the whole fine-tuned VGG (layersweep.finetune)
        from .finetune import load_full_checkpoint

        return _frozen(load_full_checkpoint(ckpt, checkpoint), device)
    model = build_model(init, weights_path, arch=arch, seed=seed)
    trainable_part(model, train, arch).load_state_dict(ckpt["state_dict"])
    return _frozen(model, device)


def load_pretrained(spec: dict, *, weights_path=None, device="cpu") -> nn.Module:
    """A model used as it is, without head training (model.source torchray_voc): spec holds the config's
    model.arch, model.source, model.init and the seed."""
    model = build_model(spec["init"], weights_path, arch=spec["arch"], source=spec["source"], seed=spec["seed"])
    return _frozen(model, device)


def needs_head_training(source: str) -> bool:
    """TorchRay's VOC model and torchvision's ImageNet model (torchvision_imagenet) keep their own classifiers: the
    head stage is skipped for them."""
    return source == "torchvision"
