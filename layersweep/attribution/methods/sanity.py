"""Sanity maps (liuktc/RefineCAM's All1sCAM, HalfCAM and a uniform-noise map): trivial explanations that ignore
the model, to expose metrics that reward them (an all-ones map has the best possible Average Drop, 0).

Each is one map at the input size (B, H, W), the same at every layer:
- `allones`: 1 everywhere, 0 at the first pixel (top left), so that it can be min-max normalised;
- `half`: 0.5 everywhere, 0 at the first pixel (top left) and 1 at the last (bottom right);
- `uniformnoise`: U(0, 1) per pixel, drawn from the crop's generator (seed, crop id, method): the same map for a
  crop whatever the batch and the layer.
They run in the perturbation pass only for its per-crop generators and the input size; they cost nothing
beyond its one forward. `randomcam` (random channel weights) is the model-dependent random baseline.
"""
import torch

from .. import work
from ..registry import register

NOISE_GROUP = 0  # the generator key of every layer: one noise map per crop


def _blank(ctx, value: float) -> torch.Tensor:
    b = ctx.images.shape[0]
    h, w = ctx.images.shape[-2:]
    return torch.full((b, h, w), value, dtype=ctx.activations.dtype, device=ctx.images.device)


@register("allones", "perturb", "liuktc/RefineCAM All1sCAM (a sanity map)", cost=work.no_layer_cost)
def allones(ctx):
    out = _blank(ctx, 1.0)
    out[:, 0, 0] = 0.0
    return out


@register("half", "perturb", "liuktc/RefineCAM HalfCAM (a sanity map)", cost=work.no_layer_cost)
def half(ctx):
    out = _blank(ctx, 0.5)
    out[:, 0, 0] = 0.0
    out[:, -1, -1] = 1.0
    return out


@register("uniformnoise", "perturb", "liuktc/RefineCAM RandomCAM's uniform-noise map (a sanity map)",
          cost=work.no_layer_cost)
def uniformnoise(ctx):
    out = _blank(ctx, 0.0)
    h, w = out.shape[-2:]
    for i in range(out.shape[0]):
        draw = torch.rand((h, w), generator=ctx.generator(i, group=NOISE_GROUP), dtype=torch.float64)
        out[i] = draw.to(out.dtype)
    return out
