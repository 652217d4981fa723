"""One adapter per model family: how to build it, where its head is, and its named site sets.

Everything the rest of layersweep needs to know about an architecture lives in its adapter
(`vgg.py`, `resnet.py`, ...): the torchvision builder, the Linear that is replaced and fine-tuned, the module
paths whose nodes are sites (`roots`), and the module paths of its blocks and stages (`blocks`, `stages`),
whose outputs are the site sets of the same names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from ..errors import LayersweepError


@dataclass(frozen=True)
class Adapter:
    family: str
    archs: tuple[str, ...]
    head: str                               # dotted path of the Linear that is replaced / fine-tuned
    roots: tuple[str, ...]                  # sites: nodes under these module paths ('' = every node)
    blocks: Callable[[nn.Module], list[str]]  # module paths of the blocks, in order
    stages: Callable[[nn.Module], list[str]]  # module paths of the stages, in order
    # transformers: the module paths whose output nodes are the sites (None: every (B, C, H, W) node under
    # `roots`), and how those tensors map onto a (C, h, w) grid (attribution/layouts.py)
    sites: Callable[[nn.Module], list[str]] | None = None
    layout: str = "nchw"
    # archs built here rather than by torchvision's builder of that name: {arch: fn(n_classes) -> model}
    builders: dict | None = None


def children_of(model: nn.Module, path: str) -> list[str]:
    """Dotted paths of the direct children of the module at `path`."""
    module = model.get_submodule(path)
    return [f"{path}.{name}" for name, _ in module.named_children()]


def _adapters() -> dict[str, Adapter]:
    from . import convnext, densenet, efficientnet, mobilenet, regnet, resnet, swin, vgg, vit
    out = {}
    for mod in (vgg, resnet, densenet, mobilenet, efficientnet, convnext, regnet, vit, swin):
        for arch in mod.ADAPTER.archs:
            out[arch] = mod.ADAPTER
    return out


ADAPTERS = _adapters()
ARCHS = tuple(ADAPTERS)


def adapter_for(arch: str) -> Adapter:
    if arch not in ADAPTERS:
        raise LayersweepError(f"config key 'model.arch' has the unknown value '{arch}'; use one of {', '.join(ARCHS)}.")
    return ADAPTERS[arch]


def head_path(model: nn.Module, arch: str) -> str:
    """The dotted path of the head Linear ('classifier.-1' in an adapter = the last child of classifier)."""
    path = adapter_for(arch).head
    parent_path, _, name = path.rpartition(".")
    if name == "-1":
        name = str(len(model.get_submodule(parent_path)) - 1)
    return f"{parent_path}.{name}" if parent_path else name


def head_of(model: nn.Module, arch: str) -> nn.Linear:
    return model.get_submodule(head_path(model, arch))


def replace_head(model: nn.Module, arch: str, n_classes: int) -> nn.Module:
    """The adapter's head replaced by a new Linear(in_features, n_classes) (seeded by the caller)."""
    parent_path, _, name = head_path(model, arch).rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    new = nn.Linear(head_of(model, arch).in_features, n_classes)
    if name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)
    return model


def build_torchvision(arch: str, n_classes: int = 1000) -> nn.Module:
    adapter = adapter_for(arch)
    if adapter.builders and arch in adapter.builders:
        return adapter.builders[arch](n_classes)
    return getattr(torchvision.models, arch)(weights=None, num_classes=n_classes)


def meta_model(arch: str, n_classes: int = 1000) -> nn.Module:
    """The architecture on the meta device (no memory, no init cost): for its structure and shapes only."""
    with torch.device("meta"):
        return build_torchvision(arch, n_classes).eval()
