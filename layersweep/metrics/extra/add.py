"""Average Drop in Deletion (ADD; LIFT-CAM eq. 13): the score lost when the map's pixels are removed.

Term (Y - D) / Y * 100 with D the score of the inverted explanation image (1 - S) * x (`metrics.mask_space`),
in percent like AD, no max(0, .). One forward per map. Depends on map values: also scored on rescaled maps.
"""
from __future__ import annotations

import torch

from ..add import average_drop_in_deletion_terms, deletion_image_scores
from ..registry import register


def _score(ctx) -> dict:
    add = torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
    for maps01, ci, rows in ctx.groups():
        if ctx.progress:  # the shared bar counts the stage's forwards: one per map here
            ctx.progress.total += len(maps01)
            ctx.progress.refresh()
        D = deletion_image_scores(ctx.model, ctx.x, maps01, ctx.targets, crop_index=ci, mask_space=ctx.mask_space,
                                  batch_size=ctx.batch_size, progress=ctx.progress, preprocessing=ctx.preprocessing)
        add[rows] = average_drop_in_deletion_terms(ctx.Y[ci], D).double()
    return {"add": add}


register(
    "add",
    columns={"add": "higher"},
    needs=("forwards",),
    rescaled=True,
    score=_score,
    cost=lambda opts, n_layers: {"forwards_per_map": 1, "attribution_passes_per_crop": 0},
    reference="Jung & Oh, ICCV 2021 (LIFT-CAM), eq. 13",
    definition="Average Drop in Deletion: (Y - D) / Y x 100 with D the score of the inverted explanation image "
               "(1 - S) x, no max(0, .) (negative when removing the map raises the score)",
)
