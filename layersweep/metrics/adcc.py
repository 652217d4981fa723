"""ADCC (Poppi, Cornia, Baraldi & Cucchiara, CVPR-W 2021): coherency, complexity and their harmonic mean with
Average Drop, for the map of every layer; the explanation images of maps of many crops and layers share each
attribution call.

With S = the map min-max normalised to [0, 1] after bilinear upsampling to the input (the pipeline's S; the
rescaled S**p for the rescaled variant), L_l(.) = the method's map at layer l, u = bilinear upsampling to the
input size, and e = x * S the explanation image (`explanation_images`, metrics.mask_space):

- coherency  = (pearson(u(L_l(x)), u(L_l(e))) + 1) / 2, in [0, 1], higher is better. The map of the explanation
  image is taken at the same layer, with the same method and target. Pearson's r does not change under the
  min-max normalisation, so comparing the upsampled raw maps is comparing the normalised ones (the paper's).
  A map of e that is constant (or not finite) has no correlation: coherency 0, as aimagelab/ADCC's code gives
  when a normalised map is NaN.
- complexity = ||S||_1 / (H * W), in [0, 1], lower is better (aimagelab/ADCC's normalisation by the pixel count;
  the paper writes ||S||_1 and needs a value in [0, 1] for 1 - complexity).
- average drop (a fraction) = max(0, Y - O) / Y, with Y, O the target's softmax score of x and of e (the
  report's AD term / 100).
- adcc = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - average drop)), per map, higher is better;
  0 when any of the three terms is 0.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import LayersweepError
from ..preprocess import TORCHVISION, Preprocessing
from .batching import (as_crop_index, check_map_size, check_mask_space, explanation_images, explanation_scores,
                       image_scores, normalize_maps, progress_bar)
from .core import average_drop_terms
from .registry import int_option, register
from .sensitivity import call_attribute


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's r of each row pair of a and b (m, ...) in float64; NaN where a row has no variance."""
    a = a.reshape(len(a), -1).double()
    b = b.reshape(len(b), -1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    r = (a * b).sum(dim=1) / den
    r = torch.where(den > 0, r, torch.full_like(r, float("nan")))
    return r.clamp(-1.0, 1.0)


def coherency_from_maps(reference: torch.Tensor, explained: torch.Tensor, constant_eps: float = 1e-6) -> torch.Tensor:
    """(r + 1) / 2 of each pair of maps (m, h, w), both at the same (input) size. A constant `explained` map
    (range below constant_eps after upsampling, or non-finite) gives 0; a constant reference gives NaN."""
    _, const = normalize_maps(explained, tuple(explained.shape[-2:]), constant_eps)
    coh = (pearson_rows(reference, explained) + 1) / 2
    return torch.where(const.to(coh.device), torch.zeros_like(coh), coh)


def complexity(maps01: torch.Tensor) -> torch.Tensor:
    """||S||_1 / (H * W) of each map (m, H, W), float64."""
    return maps01.double().abs().mean(dim=(1, 2))


def adcc_combine(coherency: torch.Tensor, complexity: torch.Tensor, average_drop: torch.Tensor) -> torch.Tensor:
    """3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - average_drop)); average_drop as a fraction in [0, 1].
    0 where a term is 0 (its reciprocal is infinite); NaN where a term is NaN."""
    terms = torch.stack([coherency.double(), 1 - complexity.double(), 1 - average_drop.double()])
    zero = (terms <= 0).any(dim=0)
    hm = 3 / (1 / terms.clamp_min(1e-300)).sum(dim=0)
    return torch.where(zero, torch.zeros_like(hm), hm)


def coherency_scores(x: torch.Tensor, targets, maps01: torch.Tensor, attribute: Callable, *, map_layers,
                     crop_index=None, reference: torch.Tensor | None = None, mask_space: str = "normalized",
                     preprocessing: Preprocessing = TORCHVISION, batch_size: int = 32, constant_eps: float = 1e-6,
                     crop_ids=None, progress=False) -> torch.Tensor:
    """Coherency of M maps: map i is `maps01[i]` (H, W) of crop `crop_index[i]` at layer `map_layers[i]`.

    attribute(images, targets) -> {layer: (b, h_l, w_l)}: the method's maps on new inputs, every layer in one
    pass. The explanation images of `batch_size` maps (any crops, any layers) go through one call; each keeps
    the map of its own layer. reference: (M, H, W) the maps of x upsampled to the input (any positive affine
    image of them: r is invariant); default `maps01` (right unless the maps were rescaled).
    crop_ids: the n crops' ids, passed on as `attribute(..., crop_ids=)` (each image gets its crop's), or None.
    Returns float64 (M,) on x's device.
    """
    check_mask_space(mask_space)
    dev = x.device
    M = len(maps01)
    H, W = x.shape[-2:]
    check_map_size(maps01, x)
    ci = as_crop_index(crop_index, M, len(x), dev)
    layers = torch.as_tensor(map_layers, device=dev).long()
    if layers.shape != (M,):
        raise LayersweepError(f"map_layers must give one layer per map ({M}), not shape {tuple(layers.shape)}.")
    reference = maps01 if reference is None else reference
    if tuple(reference.shape) != tuple(maps01.shape):
        raise LayersweepError(f"reference maps of shape {tuple(reference.shape)} for maps of shape {tuple(maps01.shape)}.")
    t = torch.as_tensor(targets, device=dev).long()
    out = torch.empty(M, dtype=torch.float64, device=dev)
    bar, own = progress_bar(progress, M, "coherency")
    try:
        for s in range(0, M, batch_size):
            idx = torch.arange(s, min(s + batch_size, M), device=dev)
            c = ci[idx]
            images = explanation_images(x[c], maps01[idx].to(dev), mask_space, preprocessing)
            ids = None if crop_ids is None else [crop_ids[i] for i in c.tolist()]
            maps = call_attribute(attribute, images, t[c], ids, layers=torch.unique(layers[idx]).tolist())
            for layer in torch.unique(layers[idx]).tolist():
                if layer not in maps:
                    raise LayersweepError(f"attribute returned no map of layer {layer}.")
                sel = torch.nonzero(layers[idx] == layer)[:, 0]
                b = torch.as_tensor(maps[layer]).to(dev)[sel].double()
                b = torch.nn.functional.interpolate(b[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
                out[idx[sel]] = coherency_from_maps(reference[idx[sel]].to(dev), b, constant_eps)
            bar.update(len(idx))
    finally:
        if own:
            bar.close()
    return out


def adcc_scores(model, x: torch.Tensor, targets, maps01: torch.Tensor, attribute: Callable, *, map_layers,
                crop_index=None, reference: torch.Tensor | None = None, Y: torch.Tensor | None = None,
                mask_space: str = "normalized", preprocessing: Preprocessing = TORCHVISION, batch_size: int = 32,
                forward_batch_size: int = 256, constant_eps: float = 1e-6, crop_ids=None, progress=False) -> dict:
    """Coherency, complexity, average drop (fraction) and ADCC of M maps (arguments as `coherency_scores`).

    Y: (n,) target scores of x (computed when None); O, the score of each explanation image, costs one
    forward per map, `forward_batch_size` images per forward. Returns {name: float64 (M,)} on x's device.
    """
    dev = x.device
    ci = as_crop_index(crop_index, len(maps01), len(x), dev)
    t = torch.as_tensor(targets, device=dev).long()
    if Y is None:
        Y = image_scores(model, x, t, batch_size=forward_batch_size)
    O = explanation_scores(model, x, maps01, t, crop_index=ci, mask_space=mask_space,
                           batch_size=forward_batch_size, progress=progress, preprocessing=preprocessing)
    ad = average_drop_terms(Y.to(dev)[ci], O).double() / 100
    coh = coherency_scores(x, t, maps01, attribute, map_layers=map_layers, crop_index=ci, reference=reference,
                           mask_space=mask_space, preprocessing=preprocessing, batch_size=batch_size,
                           constant_eps=constant_eps, crop_ids=crop_ids, progress=progress)
    com = complexity(maps01).to(dev)
    return {"coherency": coh, "complexity": com, "average_drop": ad, "adcc": adcc_combine(coh, com, ad)}


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# Coherency recomputes the method's map on each map's explanation image x * S_l and keeps layer l: one
# attribution pass per (crop, layer) map, each asking only for the layers of its batch. Depends on map values:
# also scored on the rescaled maps, with the map of x (not rescaled) as coherency's reference.
# ----------------------------------------------------------------------------------------------------------
def reference_maps_of_x(ctx, rows: torch.Tensor) -> torch.Tensor:
    """The stored maps of these rows (layer-major), upsampled and min-max normalised: coherency's reference
    when the scored maps are rescaled (S**p is not an affine image of the map)."""
    n = ctx.n
    size = tuple(ctx.x.shape[-2:])
    out = torch.empty((len(rows),) + size, device=ctx.device)
    li, ci = torch.div(rows, n, rounding_mode="floor").cpu(), (rows % n).cpu()
    for j in torch.unique(li).tolist():
        sel = torch.nonzero(li == j)[:, 0]
        raw = torch.from_numpy(ctx.raw_maps[ctx.layers[j]][ci[sel].numpy()]).to(ctx.device)
        out[sel.to(ctx.device)] = normalize_maps(raw, size, ctx.constant_eps)[0]
    return out


def _score(ctx) -> dict:
    n, L = ctx.n, len(ctx.layers)
    cols = {c: torch.full((L * n,), float("nan"), dtype=torch.float64, device=ctx.device)
            for c in ("coherency", "complexity", "adcc")}
    layer_of_row = torch.tensor(ctx.layers, device=ctx.device).repeat_interleave(n)
    for maps01, ci, rows in ctx.groups():
        ctx.add_work(2 * len(maps01))  # one forward (O) and one attribution pass (coherency) per map
        reference = maps01 if ctx.r is None else reference_maps_of_x(ctx, rows)
        res = adcc_scores(ctx.model, ctx.x, ctx.targets, maps01, ctx.attribute, map_layers=layer_of_row[rows],
                          crop_index=ci, reference=reference, Y=ctx.Y, mask_space=ctx.mask_space,
                          preprocessing=ctx.preprocessing, batch_size=ctx.options["attribution_batch"],
                          forward_batch_size=ctx.batch_size, constant_eps=ctx.constant_eps,
                          crop_ids=ctx.crop_ids, progress=ctx.progress)
        for c in cols:
            cols[c][rows] = res[c]
    return cols


register(
    "adcc",
    columns={"coherency": "higher", "complexity": "lower", "adcc": "higher"},
    needs=("forwards", "attribution"),
    rescaled=True,
    score=_score,
    options={"attribution_batch": int_option(16, 1, 4096)},
    cost=lambda opts, n_layers: {"forwards_per_map": 1, "attribution_passes_per_crop": n_layers},
    reference="Poppi, Cornia, Baraldi & Cucchiara, CVPR-W 2021; aimagelab/ADCC",
    definition="coherency = (Pearson r of the upsampled maps of x and of x * S, same layer and method + 1) / 2; "
               "complexity = ||S||_1 / (H W); adcc = 3 / (1 / coherency + 1 / (1 - complexity) + "
               "1 / (1 - AD)), AD = max(0, Y - O) / Y",
)
