"""Max-sensitivity of the layer maps (captum's `sensitivity_max`), every layer from one attribution pass.

sensitivity(x) = max_k ||E(x + delta_k) - E(x)||_F / ||E(x)||_F   (||E(x)|| = 0 counts as 1, as captum does)

E is the method's map at one layer at its native resolution (the raw map the attribution stage stores, what
captum's `LayerDeepLiftShap(...).attribute(...).sum(1)` returns), never the upsampled [0, 1] map: the metric
asks how much the explanation itself moves. delta_k (k = 1..K) is uniform in the L-inf ball of radius `radius`
around x in the model's input space (captum's `default_perturb_func`), drawn from each crop's own generator,
so a crop's value does not depend on the batch or its shard mates. One call of `attribute` on a perturbed
image gives its maps at every layer, so the K perturbations of a crop cost K + 1 attribution passes in all
(the +1 recomputes E(x) in the same arithmetic as E(x + delta), instead of reading a float16 shard).
"""
from __future__ import annotations

import inspect

from typing import Callable

import torch

from ..errors import LayersweepError
from .registry import float_option, int_option, register


def check_sensitivity_options(n_perturb_samples, radius) -> tuple[int, float]:
    if isinstance(n_perturb_samples, bool) or not isinstance(n_perturb_samples, int) or n_perturb_samples < 1:
        raise LayersweepError(f"'metrics.options.sensitivity.n_perturb_samples' is {n_perturb_samples!r}; "
                              f"it must be an integer >= 1.")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise LayersweepError(f"'metrics.options.sensitivity.radius' is {radius!r}; it must be a number > 0.")
    return int(n_perturb_samples), float(radius)


def uniform_perturbations(x_crop: torch.Tensor, n_samples: int, radius: float,
                          generator: torch.Generator) -> torch.Tensor:
    """(n_samples, C, H, W) noise, uniform in [-radius, radius], drawn in float32 (as captum's
    `torch.FloatTensor(...).uniform_`) on the generator's device, returned on x's device and dtype."""
    noise = torch.empty((n_samples,) + tuple(x_crop.shape), dtype=torch.float32, device=generator.device)
    noise.uniform_(-radius, radius, generator=generator)
    return noise.to(x_crop.device, x_crop.dtype)


def call_attribute(attribute: Callable, images, targets, crop_ids=None, layers=None) -> dict:
    """attribute(images, targets), with `crop_ids=` when given: the sampling methods then draw each image's
    orderings from its crop's id, as they did for the crop's own map, whatever the batch; with `layers=` when
    only those layers are kept (the pass then stops at them: much less work for the perturbation methods)."""
    kwargs = {} if crop_ids is None else {"crop_ids": list(crop_ids)}
    if layers is not None and "layers" in inspect.signature(attribute).parameters:
        kwargs["layers"] = list(layers)
    return attribute(images, targets, **kwargs)


def _attribute_batches(attribute: Callable, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
                       crop_ids=None) -> dict:
    """{layer: (b, h, w)} of `attribute` called on `batch_size` images at a time."""
    out: dict = {}
    for s in range(0, len(images), batch_size):
        ids = None if crop_ids is None else crop_ids[s:s + batch_size]
        maps = call_attribute(attribute, images[s:s + batch_size], targets[s:s + batch_size], ids)
        for layer, m in maps.items():
            out.setdefault(layer, []).append(torch.as_tensor(m))
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def sensitivity_max_layers(x: torch.Tensor, targets, attribute: Callable, *, generators,
                           n_perturb_samples: int = 10, radius: float = 0.02, batch_size: int = 32,
                           reference: dict | None = None, crop_ids=None, progress=None) -> dict:
    """Max-sensitivity of every layer's map of every crop.

    x: (n, C, H, W) model inputs; targets: (n,) classes. attribute(images, targets) -> {layer: (b, h_l, w_l)}:
    the method's maps at every layer on new inputs (one engine pass). generators: n torch.Generators, one per
    crop (its K perturbations are drawn from it in one call of `uniform_perturbations`). batch_size: images per
    call of `attribute`. reference: {layer: (n, h_l, w_l)} maps of x; None recomputes them with `attribute`.
    crop_ids: n ids passed on to `attribute(..., crop_ids=)` (a perturbed image gets its crop's id), or None.
    progress: a tqdm bar advanced by one per attribution pass of a crop, or None.

    Returns {layer: float64 tensor (n,)} on x's device.
    """
    n_perturb_samples, radius = check_sensitivity_options(n_perturb_samples, radius)
    if len(generators) != len(x):
        raise LayersweepError(f"{len(generators)} generators for {len(x)} crops; give one per crop.")
    if crop_ids is not None and len(crop_ids) != len(x):
        raise LayersweepError(f"{len(crop_ids)} crop ids for {len(x)} crops; give one per crop.")
    t = torch.as_tensor(targets, device=x.device).long()
    K = n_perturb_samples
    if reference is None:
        reference = _attribute_batches(attribute, x, t, batch_size, crop_ids)
        if progress is not None:
            progress.update(len(x))
    ref = {layer: torch.as_tensor(m).to(x.device, torch.float64).reshape(len(x), -1) for layer, m in reference.items()}
    ref_norm = {layer: torch.linalg.vector_norm(m, dim=1) for layer, m in ref.items()}
    ref_norm = {layer: torch.where(v == 0, torch.ones_like(v), v) for layer, v in ref_norm.items()}
    best = {layer: torch.full((len(x),), float("-inf"), dtype=torch.float64, device=x.device) for layer in ref}
    per_chunk = max(1, batch_size // K)  # crops whose K perturbed images make (about) one batch
    for c0 in range(0, len(x), per_chunk):
        crops = range(c0, min(c0 + per_chunk, len(x)))
        # crop-major, sample-minor: captum's repeat_interleave order
        perturbed = torch.cat([x[c][None] + uniform_perturbations(x[c], K, radius, generators[c]) for c in crops])
        owner = torch.arange(c0, crops.stop, device=x.device).repeat_interleave(K)
        ids = None if crop_ids is None else [crop_ids[c] for c in owner.tolist()]
        maps = _attribute_batches(attribute, perturbed, t[owner], batch_size, ids)
        if set(maps) != set(ref):
            raise LayersweepError(f"attribute returned the layers {sorted(maps)}, the reference maps are of "
                                  f"layers {sorted(ref)}.")
        for layer, m in maps.items():
            diff = m.to(torch.float64).reshape(len(m), -1) - ref[layer][owner]
            ratio = torch.linalg.vector_norm(diff, dim=1) / ref_norm[layer][owner]
            best[layer][crops.start:crops.stop] = ratio.view(len(crops), K).amax(dim=1)
        if progress is not None:
            progress.update(len(crops) * K)
    return best


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# The map is the raw one at its native resolution, recomputed by the attribution engine: K perturbed images of a
# crop and the crop itself cost K + 1 attribution passes, each giving every layer of the shard. No rescaled
# variant: it is a property of the method's raw map, not of the normalised one.
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    opts = ctx.options
    K = opts["n_perturb_samples"]
    ctx.add_work(ctx.n * (K + 1))  # the shared bar counts images: here attribution passes, K + 1 per crop
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
