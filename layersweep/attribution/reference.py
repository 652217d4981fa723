"""A copy of a model that the reference libraries (captum, pytorch-grad-cam) can hook correctly.

The libraries hook *modules*, not calls. torchvision's ResNet blocks call one `relu` module two or three
times and add in place (`out += identity`): captum's DeepLift then refuses the reused module, and
pytorch-grad-cam silently hooks its first call (and, on the CPU, stores bn2 + identity as "bn2", because the
in-place add overwrites the stored tensor). `library_copy` gives each call its own ReLU and the sum its own
`nn.Identity`, out of place, sharing every parameter; `library_module` finds the module of the copy whose
output is a given site. Used by the parity tests and bench/bench_attribution.py.
"""
from __future__ import annotations

import copy

from torch import nn
from torchvision.models.resnet import Bottleneck


class LibraryBlock(nn.Module):
    """A ResNet block as the libraries can hook it: one ReLU module per call, the sum as an nn.Identity,
    nothing in place. Shares the block's parameters."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        self.bottleneck = isinstance(block, Bottleneck)
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(3 if self.bottleneck else 2)])
        self.add = nn.Identity()

    def forward(self, x):
        b = self.block
        out = self.relus[0](b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        if self.bottleneck:
            out = b.bn3(b.conv3(self.relus[1](out)))
        identity = x if b.downsample is None else b.downsample(x)
        return self.relus[-1](self.add(out + identity))


def library_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(ref, name, None)
        if stage is None:
            continue
        for i, block in enumerate(stage):
            stage[i] = LibraryBlock(block)
    for m in ref.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    return ref


def library_module(ref, site: str) -> nn.Module:
    """The module of the library copy whose output is the engine's site `site`."""
    parts = site.split(".")
    if parts[0].startswith("layer") and len(parts) >= 3:
        lib = getattr(ref, parts[0])[int(parts[1])]
        leaf = ".".join(parts[2:])
        if leaf == "add":
            return lib.add
        if leaf.startswith("relu"):
            call = int(leaf.split("_")[1]) if "_" in leaf else 0
            return lib.relus[call]
        return lib.block.get_submodule(leaf)
    return ref.get_submodule(site)
