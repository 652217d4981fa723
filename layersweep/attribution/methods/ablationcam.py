"""AblationCAM as in pytorch_grad_cam/ablation_cam.py: w_k = (y - y_k) / y, map = ReLU(sum_k w_k A_k).

y is the target logit, y_k the target logit with channel k of the layer set to the library's ablation value:
0 where the image's activations there have minimum 0 (after a ReLU), else "minimum - 1e7". Before a ReLU that
is its only consumer, the ReLU turns "minimum - 1e7" into 0: zeroing after the ReLU is the same game, so it is
played once per layer group, at the group's top (post-ReLU, minimum 0), with tail-only forwards, and an
all-zero channel is skipped there (y_k = y exactly). Where a site has other consumers (a ResNet block's bn2
feeds the residual sum) the game is played at the site with "minimum - 1e7".
(The library lowers that value by another 1e7 for each further row of an ablation batch, because it takes the
minimum of the batch it has already ablated; past the next ReLU every such value gives the same 0.)
"""
import torch

from .. import work
from ..registry import register
from ._cam import weighted_channel_sum


def ablation_value(a: torch.Tensor) -> float:
    """pytorch-grad-cam's ablation value for one image's activations: 0 if their minimum is 0, else min - 1e7."""
    m = a.min()
    return 0.0 if m == 0 else float(m) - 1e7


def ablation_weights(ctx) -> torch.Tensor:
    acts = ctx.top_activations
    y = ctx.target_logits
    B, C = acts.shape[:2]
    w = torch.zeros((B, C), dtype=acts.dtype, device=acts.device)
    for i in range(B):
        fill = ablation_value(acts[i])
        alive = torch.nonzero(acts[i].flatten(1).ne(fill).any(dim=1))[:, 0]
        if alive.numel() == 0:
            continue
        keep = torch.ones((alive.numel(), C), dtype=acts.dtype, device=acts.device)
        keep[torch.arange(alive.numel(), device=acts.device), alive] = 0
        y_k = tail_of_masked(ctx, acts[i], keep, int(ctx.targets[i]), i, fill)
        w[i, alive] = (y[i] - y_k) / y[i]
    return w


def tail_of_masked(ctx, a, keep, target, image, fill: float = 0.0):
    """Target logits of the tail on a with the channels where keep[r] is 0 set to `fill`, for each row r,
    building at most perturb_batch rows at once."""
    rows = ctx.rows
    out = []
    for s in range(0, keep.shape[0], rows):
        k = keep[s:s + rows, :, None, None]
        z = a[None] * k if fill == 0 else torch.where(k != 0, a[None], torch.full_like(a[None], fill))
        out.append(ctx.tail(z, target, image))
    return torch.cat(out)


@register("ablationcam", "perturb", "pytorch_grad_cam.AblationCAM", weights=True, cost=work.tail_per_channel)
def ablationcam(ctx):
    w = ctx.shared(ablation_weights)
    return weighted_channel_sum(w, ctx.activations).clamp(min=0), w
