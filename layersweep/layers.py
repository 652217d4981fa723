"""The layers of a VGG's `features`: names, types and analytic receptive fields."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import LayersweepError

LAYER_TYPES = ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d")


@dataclass(frozen=True)
class LayerSpec:
    index: int          # position in model.features
    name: str           # "features.{index}", the name the report uses
    kind: str           # Conv2d | BatchNorm2d | ReLU | MaxPool2d
    rf_size: int        # receptive field of one output unit, in input pixels
    jump: int           # input pixels between neighbouring output units
    offset: int         # input coordinate of the first pixel seen by output unit 0 (may be < 0: padding)

    def rf_box(self, row: int, col: int, image_size: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), inclusive-exclusive, of unit (row, col) clipped to the image."""
        top, left = self.offset + row * self.jump, self.offset + col * self.jump
        clip = lambda v: max(0, min(image_size, v))  # noqa: E731
        return clip(top), clip(left), clip(top + self.rf_size), clip(left + self.rf_size)


def _pair(v) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise LayersweepError(f"non-square kernel, stride or padding {v} is not supported.")
        return int(v[0])
    return int(v)


def layer_specs(features: nn.Sequential) -> list[LayerSpec]:
    """Receptive field of each module's output, from kernel, stride and padding alone.

    A ceil-mode MaxPool (TorchRay's model) adds output units at the bottom/right edge but does not move
    the field, the jump or the offset of any unit, so the same recursion holds."""
    specs, rf, jump, offset = [], 1, 1, 0
    for i, module in enumerate(features):
        kind = type(module).__name__
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
            d = _pair(getattr(module, "dilation", 1))
            k_eff = d * (k - 1) + 1
            rf += (k_eff - 1) * jump
            offset -= p * jump
            jump *= s
        elif not isinstance(module, (nn.ReLU, nn.BatchNorm2d)):  # pointwise: the field does not change
            raise LayersweepError(f"features.{i} is a {kind}; only Conv2d, BatchNorm2d, ReLU and MaxPool2d are supported.")
        specs.append(LayerSpec(i, f"features.{i}", kind, rf, jump, offset))
    return specs


def parse_layers(value, n_layers: int, key: str = "attribution.layers") -> list[int]:
    """Config `layers` (or another `key`): 'all' or a list of indices / 'features.i' names."""
    if value == "all":
        return list(range(n_layers))
    if not isinstance(value, (list, tuple)) or not value:
        raise LayersweepError(f"config key '{key}' must be 'all' or a non-empty list, not {value!r}.")
    out = []
    for item in value:
        idx = item
        if isinstance(item, str) and item.startswith("features."):
            idx = item.split(".", 1)[1]
        try:
            idx = int(idx)
        except (TypeError, ValueError):
            raise LayersweepError(f"config key '{key}' names the unknown layer {item!r}; use 0..{n_layers - 1} or 'features.i'.") from None
        if not 0 <= idx < n_layers:
            raise LayersweepError(f"config key '{key}' names layer {item!r}, outside 0..{n_layers - 1}.")
        out.append(idx)
    return sorted(set(out))
