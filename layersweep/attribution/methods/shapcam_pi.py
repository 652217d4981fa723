"""SHAP-CAM|Pi| (Jung & Oh 2021, eq. 6, Algorithm 1): channel Shapley values by sampled orderings.

alpha_k = mean over orderings pi of [F(h_A(Pre_pi(k) + k)) - F(h_A(Pre_pi(k)))], F the target logit of
the network after the layer, absent channels 0; map = ReLU(sum_k alpha_k A_k). Per ordering the C prefix
coalitions are evaluated in batches (the prefix trick: C + 1 tail forwards, F(0) shared by all orderings).
Orderings are `torch.randperm(C)` from the crop's generator, exactly the draws of captum's
ShapleyValueSampling under `torch.manual_seed(crop_seed(...))`. All-zero channels are skipped: their
marginal contribution is exactly 0. Played once per layer group (see perturb.py).
"""
import torch

from .. import work
from ..registry import int_option, register
from ._cam import weighted_channel_sum
from .ablationcam import tail_of_masked


def shapley_orderings(ctx) -> torch.Tensor:
    acts = ctx.top_activations
    B, C = acts.shape[:2]
    n_orderings = ctx.options["orderings"]
    alpha = torch.zeros((B, C), dtype=acts.dtype, device=acts.device)
    for i in range(B):
        target = int(ctx.targets[i])
        gen = ctx.generator(i)
        alive = acts[i].flatten(1).ne(0).any(dim=1).cpu()
        v_empty = ctx.tail(torch.zeros_like(acts[i:i + 1]), target, i)
        for _ in range(n_orderings):
            perm = torch.randperm(C, generator=gen)
            order = perm[alive[perm]]
            if order.numel() == 0:
                continue
            keep = torch.zeros((order.numel(), C), dtype=acts.dtype)
            # row r keeps the first r + 1 players of the ordering
            keep[:, order] = torch.ones((order.numel(), order.numel()), dtype=acts.dtype).tril()
            v = tail_of_masked(ctx, acts[i], keep.to(acts.device), target, i)
            diffs = torch.diff(torch.cat([v_empty, v]))
            alpha[i, order.to(acts.device)] += diffs
    return alpha / n_orderings


@register("shapcam_pi", "perturb", "SHAP-CAM|Pi| (Jung & Oh 2021); captum.attr.ShapleyValueSampling over channels",
          weights=True, options={"orderings": int_option(10, 1, 100000)}, cost=work.tail_per_channel_ordering)
def shapcam_pi(ctx):
    alpha = ctx.shared(shapley_orderings)
    return weighted_channel_sum(alpha, ctx.activations).clamp(min=0), alpha
