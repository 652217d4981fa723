"""Energy-based pointing game (Score-CAM, Wang et al. CVPRW 2020; LIFT-CAM eq. 14; Shap-CAM sec. 4.2), on tensors.

Proportion_i = sum_{p in B_i} S_i(p) / sum_p S_i(p) * 100, with S_i the min-max normalised map after bilinear
upsampling to the model input (image mode: the whole image resized to crop_size x crop_size, where the boxes
are rescaled too) and B_i the union of the target class's boxes, as a binary mask (Score-CAM, Shap-CAM).
Choices the papers leave open:
- several boxes of the class: their union, each pixel counted once;
- fractional box coordinates (boxes rescaled with the image): a pixel (row i, column j), which covers
  [j, j+1) x [i, i+1), is inside the half-open box [x0, x1) x [y0, y1) when its centre is,
  x0 <= j + 0.5 < x1 and y0 <= i + 0.5 < y1; for integer boxes that is exactly the pixels j = x0..x1-1;
  a box narrower than a pixel may hold no centre and then adds nothing;
- percent, as the papers' tables (and AD) are;
- a sample whose target class has no box (data.target top1: a predicted class absent from the image) gets NaN,
  and the summary counts it in n_no_value (left out of the mean).
The chance level is the union's share of the image (|B_i| / (H W) * 100): the proportion of a uniform map.
Higher is better.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import LayersweepError
from .batching import as_crop_index
from .registry import register


def box_masks(boxes, size, *, sample_ids=None, device="cpu", allow_empty: bool = False) -> torch.Tensor:
    """Union masks (n, H, W) bool of each sample's boxes (a list of n float arrays (k_i, 4) of [x0, y0, x1, y1]
    in input pixels, 0-based half-open, as `layersweep.data.sample_boxes` returns them); pixel-centre rule
    (module docstring). A sample without a box, or a box that is empty, non-finite or outside the H x W
    input, is one sentence naming the sample (`sample_ids`) and the box; with `allow_empty` a sample without a
    box gets an empty mask instead."""
    H, W = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    n = len(boxes)
    ids = list(sample_ids) if sample_ids is not None else [f"#{i}" for i in range(n)]
    arrays = []
    for i, b in enumerate(boxes):
        a = np.asarray(b, dtype=np.float64)
        if a.size == 0 and allow_empty:
            arrays.append(a.reshape(0, 4))
            continue
        if a.size == 0:
            raise LayersweepError(f"sample {ids[i]} has no box of its class: the pointing game needs one.")
        if a.ndim != 2 or a.shape[1] != 4:
            raise LayersweepError(f"sample {ids[i]}: boxes must be rows of [x0, y0, x1, y1], not shape {a.shape}.")
        ok = (np.isfinite(a).all(axis=1) & (a[:, 0] >= 0) & (a[:, 0] < a[:, 2]) & (a[:, 2] <= W)
              & (a[:, 1] >= 0) & (a[:, 1] < a[:, 3]) & (a[:, 3] <= H))
        if not ok.all():
            bad = tuple(float(v) for v in a[int(np.argmin(ok))])
            raise LayersweepError(f"sample {ids[i]} has the box {bad} (x0, y0, x1, y1), which is empty or "
                                  f"outside its {W}x{H} input.")
        arrays.append(a)
    if n == 0 or not any(len(a) for a in arrays):
        return torch.zeros((n, H, W), dtype=torch.bool, device=device)
    allb = torch.from_numpy(np.concatenate(arrays))
    owner = torch.repeat_interleave(torch.arange(n), torch.tensor([len(a) for a in arrays]))
    cx = torch.arange(W, dtype=torch.float64) + 0.5
    cy = torch.arange(H, dtype=torch.float64) + 0.5
    in_x = (allb[:, 0:1] <= cx) & (cx < allb[:, 2:3])  # (B, W)
    in_y = (allb[:, 1:2] <= cy) & (cy < allb[:, 3:4])  # (B, H)
    inside = (in_y[:, :, None] & in_x[:, None, :]).reshape(len(allb), -1)
    hits = torch.zeros((n, H * W), dtype=torch.int32).index_add_(0, owner, inside.to(torch.int32))
    return (hits > 0).view(n, H, W).to(device)  # overlapping boxes count once


def energy_pointing_game(maps01: torch.Tensor, masks: torch.Tensor, crop_index=None) -> dict:
    """Share (%) of each map's mass inside its sample's box union, and the chance level, per map.

    maps01 (M, H, W) non-negative maps (min-max normalised, or rescaled: any positive scale cancels);
    masks (n, H, W) bool from `box_masks`; crop_index (M,) the sample of each map (None: M == n).
    Returns {'pointing_game': (M,) float64, 'pointing_chance': (M,) float64} on the maps' device; a map of
    zero mass gives NaN. Sums accumulate in float64 (the masked product itself is exact in float32).
    """
    dev = maps01.device
    if tuple(masks.shape[-2:]) != tuple(maps01.shape[-2:]):
        raise LayersweepError(f"box masks of size {tuple(masks.shape[-2:])} do not match the maps' size "
                              f"{tuple(maps01.shape[-2:])}.")
    ci = as_crop_index(crop_index, len(maps01), len(masks), dev)
    masks = masks.to(dev)
    inside = torch.sum(maps01 * masks[ci], dim=(1, 2), dtype=torch.float64)
    total = torch.sum(maps01, dim=(1, 2), dtype=torch.float64)
    share = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                        torch.full_like(total, float("nan")))
    chance = masks.sum(dim=(1, 2), dtype=torch.float64)[ci] / (masks.shape[-1] * masks.shape[-2])
    return {"pointing_game": share * 100, "pointing_chance": chance * 100}


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# Image mode only (needs the boxes). The chance level is a reference column (direction "none"). No forward of
# its own (the stage's score Y: one per crop). Rescaled too: the share is
# invariant to a positive factor but not to the power S**p of the rescaling, which moves it between the chance
# level of the map's support (p -> 0: every non-zero pixel alike) and the classic pointing game, 100 or 0 as the
# map's maximum falls inside a box or not (p -> inf).
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    masks = box_masks(ctx.boxes, tuple(ctx.x.shape[-2:]), sample_ids=ctx.crop_ids, device=ctx.device,
                      allow_empty=True)
    # a target class without a box (top1 predicted a class absent from the image): no value, counted by the summary
    no_box = torch.tensor([np.asarray(b).size == 0 for b in ctx.boxes], dtype=torch.bool, device=ctx.device)
    share = torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
    chance = torch.full_like(share, float("nan"))
    for maps01, ci, rows in ctx.groups():
        res = energy_pointing_game(maps01, masks, ci)
        gone = no_box[ci if ci is not None else torch.arange(len(maps01), device=ctx.device)]
        share[rows] = torch.where(gone, torch.nan, res["pointing_game"])
        chance[rows] = torch.where(gone, torch.nan, res["pointing_chance"])
    return {"pointing_game": share, "pointing_chance": chance}


register(
    "pointing_game",
    columns={"pointing_game": "higher", "pointing_chance": "none"},
    needs=("boxes",),
    rescaled=True,
    score=_score,
    cost=lambda opts, n_layers: {"forwards_per_map": 0, "attribution_passes_per_crop": 0},
    reference="Wang et al., CVPR-W 2020 (Score-CAM); Jung & Oh, ICCV 2021 (LIFT-CAM), eq. 14",
    definition="energy-based pointing game: share (%) of the upsampled, min-max normalised map's mass inside "
               "the union of the target class's boxes (a pixel is inside when its centre is); pointing_chance = "
               "the union's share of the image (a uniform map's score)",
)
