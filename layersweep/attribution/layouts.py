"""Site layouts: how a site's tensor maps onto the (C, h, w) grid the methods work on, and back.

CNN sites are already (B, C, H, W). Transformer sites are not:
- `tokens`: a ViT sequence (B, N, C) whose token 0 is the class token and tokens 1..N-1 the patch grid in
  row-major order (token 1 + r * w + c is grid position (r, c), as torchvision's `conv_proj` flattens it).
  `to_grid` drops the class token and reshapes the patches to (B, C, h, w) with h = w = sqrt(N - 1);
- `channels_last`: a Swin feature map (B, H, W, C). `to_grid` permutes it to (B, C, H, W).

`to_grid` is a selection and a permutation of entries, so the gradient (or DeepLift multiplier) of the grid
is `to_grid` of the tensor's gradient: activations, gradients and multipliers all go through the same
`to_grid`. `from_grid` is its inverse for the perturbation methods, which write a perturbed grid back into the
network: the class token, which is not on the grid, keeps its clean value. Both act on the trailing
dimensions, so any leading dimensions (the DeepLift pass's (G, Hb) pairs) pass through.
"""
from __future__ import annotations

import math

import torch

from ..errors import LayersweepError

LAYOUTS = ("nchw", "tokens", "channels_last")


def token_grid(n_tokens: int) -> tuple[int, int]:
    """(h, w) of the patch grid of a sequence of n_tokens tokens, the first of them the class token."""
    side = math.isqrt(max(n_tokens - 1, 0))
    if n_tokens < 2 or side * side != n_tokens - 1:
        raise LayersweepError(f"a token site has {n_tokens} tokens; the tokens layout needs one class token and a "
                              "square patch grid (1 + h * h tokens).")
    return side, side


def to_grid(layout: str, t: torch.Tensor) -> torch.Tensor:
    """A site's tensor (..., <layout dims>) as (..., C, h, w)."""
    if layout == "nchw":
        return t
    if layout == "channels_last":  # (..., H, W, C)
        return t.movedim(-1, -3)
    if layout == "tokens":  # (..., N, C)
        h, w = token_grid(t.shape[-2])
        patches = t[..., 1:, :].movedim(-1, -2)  # (..., C, N - 1)
        return patches.reshape(tuple(t.shape[:-2]) + (t.shape[-1], h, w))
    raise LayersweepError(f"unknown site layout {layout!r}; use one of {', '.join(LAYOUTS)}.")


def from_grid(layout: str, grid: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_grid` for a grid (R, C, h, w): the site's tensor with the grid written into it.
    `clean` (1 or R, <layout dims>) supplies what is not on the grid (the class token)."""
    if layout == "nchw":
        return grid
    if layout == "channels_last":
        return grid.movedim(-3, -1)
    if layout == "tokens":
        patches = grid.flatten(-2).movedim(-2, -1)  # (R, h * w, C)
        cls = clean[..., :1, :].expand(tuple(patches.shape[:-2]) + (1, patches.shape[-1]))
        return torch.cat([cls.to(patches.dtype), patches], dim=-2)
    raise LayersweepError(f"unknown site layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
