"""ScoreCAM as in pytorch_grad_cam/score_cam.py: channel weights = softmax over channels of the target logits
of the input masked by each upsampled, min-max normalised activation map; map = ReLU(sum_k w_k A_k).

The masks are upsampled with align_corners=True (the library's UpsamplingBilinear2d) and built on the
device `perturb_batch` channels at a time, never all C at once. A constant channel normalises to 0, so its
masked input is the zero image: one forward of the zero image serves every constant channel.
"""
import torch

from .. import work
from ..registry import register
from ..perturb import upsample_to
from ._cam import weighted_channel_sum


@register("scorecam", "perturb", "pytorch_grad_cam.ScoreCAM", weights=True, cost=work.full_per_channel)
def scorecam(ctx):
    acts, images = ctx.activations, ctx.images
    B, C = acts.shape[:2]
    size = images.shape[-2:]
    rows = ctx.rows
    scores = torch.empty((B, C), dtype=acts.dtype, device=acts.device)
    zero_logits = None
    for i in range(B):
        target = int(ctx.targets[i])
        for s in range(0, C, rows):
            up = upsample_to(acts[i:i + 1, s:s + rows], size)[0]  # (c, H, W)
            lo = up.flatten(1).amin(dim=1)[:, None, None]
            hi = up.flatten(1).amax(dim=1)[:, None, None]
            masks = (up - lo) / (hi - lo + 1e-8)
            constant = (hi == lo).flatten()
            varying = torch.nonzero(~constant)[:, 0]
            if varying.numel():
                scores[i, s + varying] = ctx.full(images[i][None] * masks[varying][:, None], target)
            if constant.any():
                if zero_logits is None:
                    zero_logits = ctx.full_logits(torch.zeros_like(images[:1]))[0]
                scores[i, s + torch.nonzero(constant)[:, 0]] = zero_logits[target]
    weights = torch.softmax(scores, dim=1)
    return weighted_channel_sum(weights, acts).clamp(min=0), weights
