"""Max-sensitivity (captum's `sensitivity_max`) of each layer map: how far the map moves when the input moves
by at most `radius` per value (uniform L-inf noise in the model's input space, seeded per crop). The map is the
raw one at its native resolution, recomputed by the attribution engine: K perturbed images of a crop and the
crop itself cost K + 1 attribution passes, each giving every layer of the shard. Rank-free but not rescalable:
it is a property of the method's raw map, not of the normalised one.
"""
from __future__ import annotations

import torch

from ..registry import float_option, int_option, register
from ..sensitivity import sensitivity_max_layers


def _score(ctx) -> dict:
    opts = ctx.options
    K = opts["n_perturb_samples"]
    if ctx.progress:  # the shared bar counts images: here attribution passes, K + 1 per crop
        ctx.progress.total += ctx.n * (K + 1)
        ctx.progress.refresh()
    gens = [ctx.crop_generator(i, "perturbation") for i in range(ctx.n)]
    per_layer = sensitivity_max_layers(ctx.x, ctx.targets, ctx.attribute, generators=gens, n_perturb_samples=K,
                                       radius=opts["radius"], batch_size=opts["attribution_batch"],
                                       crop_ids=ctx.crop_ids, progress=ctx.progress or None)
    return {"sensitivity": torch.cat([per_layer[layer].to(ctx.device) for layer in ctx.layers])}


register(
    "sensitivity",
    columns={"sensitivity": "lower"},
    needs=("attribution",),
    rescaled=False,
    score=_score,
    options={"n_perturb_samples": int_option(10, 1, 1000),
             "radius": float_option(0.02, 0.0, 100.0, open_low=True),
             "attribution_batch": int_option(16, 1, 4096)},
    cost=lambda opts, n_layers: {"forwards_per_map": 0, "attribution_passes_per_crop": opts["n_perturb_samples"] + 1},
    reference="Yeh et al., NeurIPS 2019 (max-sensitivity); captum.metrics.sensitivity_max",
    definition="max over K perturbations x + d, d uniform in [-radius, radius] per input value (model input "
               "space, seeded per crop), of ||E(x + d) - E(x)||_F / ||E(x)||_F, E = the raw layer map at its "
               "native resolution",
)
