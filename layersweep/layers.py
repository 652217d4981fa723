"""The layer description the figures use: each site's name, kind and analytic receptive field.

`arch_layer_specs(arch, source)` reads them off the traced graph of `model.arch` (meta device, no weights):
the receptive field of a node's output follows from kernel, stride and padding along the graph. Where
branches meet (a residual sum, a concatenation) the field is the widest of the branches', with the finest
jump and the leftmost offset. Pointwise nodes keep their input's field.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import nn

from .errors import LayersweepError

# the figures' names of the node kinds a VGG has (other kinds keep the node kind: add, cat, relu6, ...)
KIND_NAMES = {"conv": "Conv2d", "relu": "ReLU", "maxpool": "MaxPool2d", "batchnorm": "BatchNorm2d"}


@dataclass(frozen=True)
class LayerSpec:
    index: int          # site index (a VGG's position in model.features)
    name: str           # site name: "features.{index}" on a VGG, "layer1.0.relu_1" on a ResNet
    kind: str           # Conv2d | BatchNorm2d | ReLU | MaxPool2d | the node kind of other sites
    rf_size: int        # receptive field of one output unit, in input pixels
    jump: int           # input pixels between neighbouring output units
    offset: int         # input coordinate of the first pixel seen by output unit 0 (may be < 0: padding)
    label: str = ""     # how figures name it: the block's module path where the site ends a block
    deeplift_rules: str = "exact"  # "gradient_fallback" where captum has no rule for a node after the site

    def rf_box(self, row: int, col: int, image_size: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), inclusive-exclusive, of unit (row, col) clipped to the image."""
        top, left = self.offset + row * self.jump, self.offset + col * self.jump
        clip = lambda v: max(0, min(image_size, v))  # noqa: E731
        return clip(top), clip(left), clip(top + self.rf_size), clip(left + self.rf_size)


def _pair(v) -> int:
    if isinstance(v, tuple):
        return int(max(v))  # non-square: the larger side (a bound on the field)
    return int(v)


def _step(module: nn.Module, rf: int, jump: int, offset: int) -> tuple[int, int, int]:
    """The field after a conv / pooling module, from the field of its input."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
        d = _pair(getattr(module, "dilation", 1))
        k_eff = d * (k - 1) + 1
        return rf + (k_eff - 1) * jump, jump * s, offset - p * jump
    return rf, jump, offset


def layer_specs(features: nn.Sequential) -> list[LayerSpec]:
    """Receptive field of each module's output of a VGG's `features` chain.

    A ceil-mode MaxPool (TorchRay's model) adds output units at the bottom/right edge but does not move
    the field, the jump or the offset of any unit, so the same recursion holds."""
    specs, rf, jump, offset = [], 1, 1, 0
    for i, module in enumerate(features):
        if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.BatchNorm2d)):
            raise LayersweepError(f"features.{i} is a {type(module).__name__}; only Conv2d, BatchNorm2d, ReLU and MaxPool2d are supported.")
        rf, jump, offset = _step(module, rf, jump, offset)
        specs.append(LayerSpec(i, f"features.{i}", type(module).__name__, rf, jump, offset))
    return specs


def site_layer_specs(table) -> list[LayerSpec]:
    """Receptive field of every site of a `SiteTable`, along its graph."""
    graph = table.graph
    field: dict = {}
    for node in graph.nodes:
        if node.kind == "input":
            field[node.index] = (1, 1, 0)
            continue
        ins = [field[j] for j in node.inputs if j in field]
        if not ins:
            continue
        rf, jump, offset = max(f[0] for f in ins), min(f[1] for f in ins), min(f[2] for f in ins)
        field[node.index] = _step(node.module, rf, jump, offset) if node.module is not None else (rf, jump, offset)
    return [LayerSpec(s.index, s.name, KIND_NAMES.get(s.kind, s.kind), *field[s.node], label=s.label,
                      deeplift_rules=graph.deeplift_rules(s.node)) for s in table.sites]


@functools.lru_cache(maxsize=16)
def arch_layer_specs(arch: str = "vgg11", source: str = "torchvision") -> tuple[LayerSpec, ...]:
    """The sites of `model.arch` with their receptive fields (on a VGG, identical to layer_specs(features))."""
    from .attribution.sites import arch_site_table
    return tuple(site_layer_specs(arch_site_table(arch, source)))


def site_index(value, specs, key: str) -> int:
    """A config value naming one site (an index, a site name or a block's label) -> its index."""
    by_name = {s.name: s.index for s in specs} | {s.label: s.index for s in specs if s.label}
    n = len(specs)
    if isinstance(value, str) and value in by_name:
        return by_name[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return value
    raise LayersweepError(f"config key '{key}' names the layer {value!r}, which is not a site of model.arch (0..{n - 1} or a site name such as {specs[-1].name}).")
