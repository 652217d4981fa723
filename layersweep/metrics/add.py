"""Average Drop in Deletion (ADD; LIFT-CAM, Jung & Oh ICCV 2021, eq. 13), on tensors.

D_i = softmax(f((1 - S_i) * x_i))_c is the score of the *inverted* explanation image (the map's pixels
removed in proportion to their value), and the term is (Y_i - D_i) / Y_i * 100, in percent like the project's
Average Drop. There is no max(0, .): a map whose removal raises the score gives a negative term. Higher is
better (removing what the map points at hurts the score).
"""
from __future__ import annotations

import numpy as np
import torch

from ..preprocess import TORCHVISION, Preprocessing
from .batching import as_pair, explanation_scores
from .registry import register


def average_drop_in_deletion_terms(Y, D):
    """Per-image ADD term (Y - D) / Y * 100 (Y: score of the image, D: of its inverted explanation image).

    As `average_drop_terms`: Y == 0 (a softmax underflow) gives 0, NaN in Y or D gives NaN, numpy or torch.
    """
    xp, Y, D = as_pair(Y, D)
    drop = Y - D
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = xp.where(Y == 0, drop * 0, drop / xp.where(Y == 0, xp.ones_like(Y), Y))
    return ratio * 100


def deletion_image_scores(model, x: torch.Tensor, maps01: torch.Tensor, targets, *, crop_index=None,
                          mask_space: str = "normalized", batch_size: int = 256, progress=False,
                          preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    """D = score of the inverted explanation image `explanation_images(x, 1 - S, mask_space)` of each map (M,),
    with the target of the map's crop; one forward per map, `batch_size` maps per forward. 1 - S is built
    per batch, so the maps are not copied."""
    return explanation_scores(model, x, maps01, targets, crop_index=crop_index, mask_space=mask_space,
                              batch_size=batch_size, progress=progress, preprocessing=preprocessing, complement=True)


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# One forward per map (D); Y is the stage's. Depends on map values (1 - S**p is not 1 - S): also scored on the
# rescaled maps.
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    add = torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
    for maps01, ci, rows in ctx.groups():
        ctx.add_work(len(maps01))  # the shared bar counts the stage's forwards: one per map here
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
