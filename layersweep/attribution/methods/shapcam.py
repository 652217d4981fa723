"""Shap-CAM (Zheng et al. 2022): the spatial positions of the layer are the players, each the whole C-vector
A[:, i, j]; the map is their Shapley values phi (h, w) of the target's softmax probability (`value: prob`,
the paper) or logit, estimated from `permutations` sampled orderings (Castro et al. 2009) with the prefix
trick. Absent positions are 0 (`absent: zero`, the paper) or the channel's spatial mean (`absent: mean`, the
report). The paper applies no ReLU: the raw phi are stored. Positions equal to their absent value are
skipped (phi exactly 0). Orderings are `torch.randperm(h * w)` from the crop's generator, keyed by the
layer (the game differs between a conv and its ReLU under `absent: mean`), i.e. captum's
ShapleyValueSampling draws under `torch.manual_seed(crop_seed(seed, crop, "shapcam", layer))`.
"""
import torch

from .. import work
from ..registry import choice_option, int_option, register


def _values(ctx, rows, target, image):
    logits = ctx.logits_after(rows, image, at=ctx.node)
    if ctx.options["value"] == "logit":
        return logits[:, target]
    return torch.softmax(logits, dim=1)[:, target]


@register("shapcam", "perturb", "Shap-CAM (Zheng et al. 2022); captum.attr.ShapleyValueSampling over positions",
          options={"permutations": int_option(10, 1, 100000), "absent": choice_option("zero", ("zero", "mean")),
                   "value": choice_option("prob", ("prob", "logit"))},
          cost=work.tail_per_position_permutation)
def shapcam(ctx):
    acts = ctx.activations
    B, C, H, W = acts.shape
    n = H * W
    K = ctx.options["permutations"]
    phi = torch.zeros((B, n), dtype=acts.dtype, device=acts.device)
    chunk = ctx.rows
    for i in range(B):
        target = int(ctx.targets[i])
        a = acts[i].reshape(C, n)
        base = a.mean(dim=1, keepdim=True).expand(C, n) if ctx.options["absent"] == "mean" else torch.zeros_like(a)
        alive = (a != base).any(dim=0).cpu()
        v_empty = _values(ctx, base.reshape(1, C, H, W), target, i)
        gen = ctx.generator(i, group=ctx.position)
        for _ in range(K):
            perm = torch.randperm(n, generator=gen)
            order = perm[alive[perm]]
            m = order.numel()
            if m == 0:
                continue
            order_dev = order.to(acts.device)
            values = []
            for s in range(0, m, chunk):  # rows s..s+chunk keep the first r + 1 players of the ordering
                r = torch.arange(s, min(s + chunk, m), device=acts.device)
                keep = torch.zeros((r.numel(), n), dtype=torch.bool, device=acts.device)
                keep[:, order_dev] = torch.arange(m, device=acts.device)[None, :] <= r[:, None]
                rows = torch.where(keep[:, None, :], a[None], base[None]).reshape(-1, C, H, W)
                values.append(_values(ctx, rows, target, i))
            v = torch.cat(values)
            phi[i, order_dev] += torch.diff(torch.cat([v_empty, v]))
    return (phi / K).reshape(B, H, W)
