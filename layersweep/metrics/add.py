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
from .scoring import _as_index, _pair, _score_batches, check_mask_space, explanation_images


def average_drop_in_deletion_terms(Y, D):
    """Per-image ADD term (Y - D) / Y * 100 (Y: score of the image, D: of its inverted explanation image).

    As `average_drop_terms`: Y == 0 (a softmax underflow) gives 0, NaN in Y or D gives NaN, numpy or torch.
    """
    xp, Y, D = _pair(Y, D)
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
    check_mask_space(mask_space)
    ci = _as_index(crop_index, len(maps01), len(x), x.device)
    t = torch.as_tensor(targets, device=x.device).long()
    maps01 = maps01.to(x.device)

    def make(i):
        c = ci[i]
        return explanation_images(x[c], 1 - maps01[i], mask_space, preprocessing), t[c]

    return _score_batches(model, len(maps01), make, batch_size, x.device, progress, "deletion image")
