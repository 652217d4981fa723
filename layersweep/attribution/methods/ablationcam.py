"""AblationCAM as in pytorch_grad_cam/ablation_cam.py: w_k = (y - y_k) / y, map = ReLU(sum_k w_k A_k).

y is the target logit, y_k the target logit with channel k of the layer set to 0. The library's ablation
value is 0 at post-ReLU layers and "min - 1e7" before a ReLU, which the ReLU turns into 0 too: zeroing is
the same game. It is played once per layer group, at the group's top, with tail-only forwards; an
all-zero channel is skipped (y_k = y exactly).
"""
import torch

from ... import cost
from ..registry import register
from ._cam import weighted_channel_sum


def ablation_weights(ctx) -> torch.Tensor:
    acts = ctx.top_activations
    y = ctx.target_logits
    B, C = acts.shape[:2]
    w = torch.zeros((B, C), dtype=acts.dtype, device=acts.device)
    for i in range(B):
        alive = torch.nonzero(acts[i].flatten(1).ne(0).any(dim=1))[:, 0]
        if alive.numel() == 0:
            continue
        keep = torch.ones((alive.numel(), C), dtype=acts.dtype, device=acts.device)
        keep[torch.arange(alive.numel(), device=acts.device), alive] = 0
        y_k = tail_of_masked(ctx, acts[i], keep, int(ctx.targets[i]), i)
        w[i, alive] = (y[i] - y_k) / y[i]
    return w


def tail_of_masked(ctx, a, keep, target, image):
    """Target logits of the tail on a * keep[r] for each row r, building at most perturb_batch rows at once."""
    rows = ctx.rows
    out = []
    for s in range(0, keep.shape[0], rows):
        out.append(ctx.tail(a[None] * keep[s:s + rows, :, None, None], target, image))
    return torch.cat(out)


@register("ablationcam", "perturb", "pytorch_grad_cam.AblationCAM", weights=True, cost=cost.tail_per_channel)
def ablationcam(ctx):
    w = ctx.shared(ablation_weights)
    return weighted_channel_sum(w, ctx.activations).clamp(min=0), w
