"""Energy-based pointing game (Score-CAM; LIFT-CAM eq. 14; Shap-CAM sec. 4.2), image mode only.

The share (%) of the map's mass inside the union of the target class's boxes, and its chance level (the union's
share of the image, the score of a uniform map) as a reference column. No forward. Rescaled too: the share is
invariant to a positive factor but not to the power S**p of the rescaling, which moves it between the chance
level of the map's support (p -> 0: every non-zero pixel alike) and the classic pointing game, 100 or 0 as the
map's maximum falls inside a box or not (p -> inf).
"""
from __future__ import annotations

import torch

from ..pointing_game import box_masks, energy_pointing_game
from ..registry import register


def _score(ctx) -> dict:
    masks = box_masks(ctx.boxes, tuple(ctx.x.shape[-2:]), sample_ids=ctx.crop_ids, device=ctx.device)
    share = torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
    chance = torch.full_like(share, float("nan"))
    for maps01, ci, rows in ctx.groups():
        res = energy_pointing_game(maps01, masks, ci)
        share[rows], chance[rows] = res["pointing_game"], res["pointing_chance"]
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
