"""Ground-truth measures: how close each map lies to the sample's ground-truth mask (data.source: shapes, whose
mask is the drawn shape's pixels; docs/groundtruth.md).

With S the map upsampled bilinearly to the input and min-max normalised to [0, 1] (the pipeline's S; S**p on
rescaled maps) and M the binary mask of the same size:
- gt_cosine = <S, M> / (||S|| ||M||), in [0, 1], higher is better;
- gt_auc = the ROC-AUC of the pixels' map values as a score for "inside the mask" (ties count one half, as
  sklearn.metrics.roc_auc_score does), in [0, 1], 0.5 = chance, higher is better; it depends on the order of
  the values only, so it has no rescaled variant;
- gt_mass = sum(S M) / sum(S), the share of the map's mass inside the mask, in [0, 1], higher is better: the
  energy pointing game (`pointing_game.energy_pointing_game`) with the mask in place of the boxes, as a fraction;
- gt_chance = |M| / (H W), the mass share of a uniform map (a reference, direction "none").
A mask without a pixel, or covering every pixel, has no AUC: NaN.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import LayersweepError
from .batching import as_crop_index
from .pointing_game import energy_pointing_game
from .registry import register

GT_COLUMNS = {"gt_cosine": "higher", "gt_auc": "higher", "gt_mass": "higher"}


def roc_auc_rows(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """ROC-AUC (M,) float64 of each map's pixels (M, H, W) against its mask (M, H, W) bool, by the rank-sum
    (Mann-Whitney) formula with tie-averaged ranks; NaN where the mask is empty or full."""
    s = maps.reshape(len(maps), -1).double().cpu().numpy()
    m = masks.reshape(len(masks), -1).bool().cpu().numpy()
    if len(s) == 0:
        return torch.zeros(0, dtype=torch.float64)
    ranks = rankdata(s, axis=1, method="average")
    n_pos = m.sum(axis=1).astype(np.float64)
    n_neg = m.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * m).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return torch.from_numpy(auc)


def cosine_rows(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """<S, M> / (||S|| ||M||) per row (M,) float64; NaN where either is all zeros."""
    s = maps.reshape(len(maps), -1).double()
    m = masks.reshape(len(masks), -1).double()
    den = s.norm(dim=1) * m.norm(dim=1)
    cos = (s * m).sum(dim=1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, cos, torch.full_like(cos, float("nan")))


def groundtruth_scores(maps01: torch.Tensor, masks: torch.Tensor, crop_index=None) -> dict:
    """{gt_cosine, gt_auc, gt_mass, gt_chance}: (M,) float64 of M maps (M, H, W) against the masks (n, H, W)
    of their crops (crop_index (M,), None: M == n)."""
    if tuple(masks.shape[-2:]) != tuple(maps01.shape[-2:]):
        raise LayersweepError(f"ground-truth masks of size {tuple(masks.shape[-2:])} do not match the maps' size "
                              f"{tuple(maps01.shape[-2:])}; were the masks written at data.crop_size?")
    dev = maps01.device
    ci = as_crop_index(crop_index, len(maps01), len(masks), dev)
    m = masks.to(dev).bool()[ci]
    energy = energy_pointing_game(maps01, masks.to(dev).bool(), ci)
    return {"gt_cosine": cosine_rows(maps01, m).to(dev), "gt_auc": roc_auc_rows(maps01, m).to(dev),
            "gt_mass": energy["pointing_game"] / 100, "gt_chance": energy["pointing_chance"] / 100}


def _score(ctx) -> dict:
    out = {c: torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
           for c in (*GT_COLUMNS, "gt_chance")}
    for maps01, ci, rows in ctx.groups():
        for col, v in groundtruth_scores(maps01, ctx.masks, ci).items():
            out[col][rows] = v
    if ctx.r is not None:  # rescaled maps: the columns that depend on the values
        return {c: out[c] for c in ("gt_cosine", "gt_mass", "gt_chance")}
    return out


register(
    "groundtruth",
    columns={**GT_COLUMNS, "gt_chance": "none"},
    needs=("masks",),
    rescaled=("gt_cosine", "gt_mass", "gt_chance"),
    score=_score,
    cost=lambda opts, n_layers: {"forwards_per_map": 0, "attribution_passes_per_crop": 0},
    reference="Domeniconi et al., ICPR 2026 (How to Evaluate and Refine your CAM): ground-truth masks of the "
              "synthetic shapes",
    definition="similarity of the upsampled, min-max normalised map to the sample's ground-truth mask: cosine, "
               "ROC-AUC (pixels ranked by the map), and the share of the map's mass inside the mask (the energy "
               "pointing game against the mask); gt_chance = the mask's share of the image",
)
