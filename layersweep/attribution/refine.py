"""RefineCAM and the other multi-layer mixers: one base method's maps at several layers, each normalised and
upsampled to the input, combined element-wise for every prefix of the layers ordered deep -> shallow.

Per layer l (the base map A_l (B, h_l, w_l) at its native resolution):
    N_l = minmax(upsample(minmax(relu(A_l))))      upsample = bilinear, align_corners=False (torch.interpolate)
where minmax of a constant (or non-finite) map is 0 and the map is flagged. Then, with layers ordered deep ->
shallow l_1, ..., l_K, the map stored at layer l_k is the mix of the prefix N_1 .. N_k, min-max normalised:

    product    prod_j N_j                               (RefineCAM: the coarse deep maps gate the shallow ones)
    geometric  (prod_j N_j)^(1/k)
    logexp     (ln k + 1) / ln sum_j exp(1 / N_j)        (a soft minimum; ln sum exp is taken as a logsumexp)
    expmean    1 / ln mean_j exp(1 / N_j)
    identity   N_k                                      (the single layer, normalised and upsampled)

A pixel where some N_j = 0 gets 1/N_j = inf, and logexp / expmean give 0 there, as the formulas' limits.
At k = 1 every mixer gives N_1.

This module works on "an ordered list of (layer key, base maps)": it knows nothing of how layers are named or
computed. The engine's hook (`engine._mixed_methods`) hands it the base method's maps of one shared pass.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import LayersweepError

MIXERS = ("product", "geometric", "logexp", "expmean", "identity")


def minmax(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps - min) / (max - min) of each map (B, H, W), and (B,) bool flags: a constant or non-finite map is
    returned as zeros and flagged (pytorch-grad-cam divides by max + 1e-7 instead, which differs by ~1e-7)."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    span = hi - lo
    constant = ~(span > 0) | ~torch.isfinite(flat).all(dim=1)
    safe = torch.where(constant, torch.ones_like(span), span)
    out = (maps - lo[:, None, None]) / safe[:, None, None]
    return torch.where(constant[:, None, None], torch.zeros_like(out), out), constant


def layer_map01(maps: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """N_l of base maps (B, h, w) at the input size (H, W): ReLU, min-max, bilinear upsampling (align_corners
    False), min-max again. Returns (N (B, H, W), constant (B,))."""
    if maps.ndim != 3:
        raise LayersweepError(f"base maps must have shape (B, h, w), not {tuple(maps.shape)}.")
    m, const_native = minmax(maps.clamp(min=0))
    H, W = int(size[0]), int(size[1])
    if tuple(m.shape[-2:]) != (H, W):
        m = F.interpolate(m[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    m, const_up = minmax(m)
    return m, const_native | const_up


def mix_prefixes(ordered: list, size, mixer: str = "product") -> dict:
    """The mixed map of every prefix of `ordered`, a list of (layer key, base maps (B, h, w)) ordered deep ->
    shallow; all at `size` (H, W). Returns {key: (maps01 (B, H, W), constant (B,))}: the entry of the k-th key
    mixes keys 1..k. `constant` flags a prefix whose mix is constant, or one of whose layers' maps is."""
    if mixer not in MIXERS:
        raise LayersweepError(f"mixer {mixer!r} is not one of {', '.join(MIXERS)} (option 'mixer').")
    if not ordered:
        raise LayersweepError("a mix needs the base maps of at least one layer.")
    out = {}
    running = None    # product: prod N_j; logexp / expmean: logsumexp of 1/N_j
    flagged = None
    for k, (key, maps) in enumerate(ordered, start=1):
        n, const = layer_map01(maps, size)
        flagged = const if flagged is None else flagged | const
        if mixer == "identity":
            mixed, flagged = n, const
        elif mixer in ("product", "geometric"):
            running = n if running is None else running * n
            mixed = running if mixer == "product" else running.pow(1.0 / k)
        else:
            inv = 1.0 / n  # inf where N = 0
            running = inv if running is None else torch.logaddexp(running, inv)
            denom = running if mixer == "logexp" else running - math.log(k)
            num = math.log(k) + 1 if mixer == "logexp" else 1.0
            mixed = num / denom  # num / inf = 0
        maps01, const_mix = minmax(mixed)
        out[key] = (maps01, flagged | const_mix)
    return out
