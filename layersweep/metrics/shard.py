"""Stage functions: score one attribution shard, plain (AD, IC, deletion, insertion) or rescaled (AD, IC).

An attribution shard (npz, or the dict of its arrays) holds: `method` (0-d str), `crop_id` (str N),
`target` (int64 N), `logit` and `prob` (float32 N, the model's output on the crop), `layers` (int64 L) and
one `map_{layer}` (N, H_l, W_l) per layer at the layer's native resolution. Only `logit` is unused here;
`prob`, when present, is checked against the score recomputed from the crops.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..device import resolve_device
from ..errors import LayersweepError
from ..precision import check_precision, precision_model
from ..preprocess import TORCHVISION, Preprocessing, to_model_input
from .rescale import check_r, rescale_maps
from .scoring import (average_drop_terms, check_insertion_start, check_mask_space, crop_scores, curve_counts,
                      deletion_insertion, explanation_scores, image_scores, increase_in_confidence_terms,
                      normalize_maps)

REQUIRED_KEYS = ("method", "crop_id", "target", "layers")
# maps of one pass: float32 maps + int32 ranks + the int64 argsort they come from, 16 bytes per pixel
_PASS_BYTES = 2**29


def read_shard(shard) -> dict:
    """Validate an attribution shard (a path to its npz, or a mapping of its arrays) and return
    {'name', 'method', 'crop_id' (list of str), 'target' (int64 N), 'layers' (list of int),
    'maps' ({layer: array (N, h, w)}), 'prob' (float N or None)}."""
    if isinstance(shard, (str, os.PathLike)):
        from ..attribution.shards import read_attribution_shard  # one reader of the file format

        name = os.fspath(shard)
        raw = read_attribution_shard(name)
        data = {k: raw[k] for k in ("method", "crop_id", "target", "logit", "prob", "layers")}
        data.update({f"map_{layer}": m for layer, m in raw["maps"].items()})
    else:
        name, data = "attribution shard", shard
    keys = set(data.keys())
    for key in REQUIRED_KEYS:
        if key not in keys:
            raise LayersweepError(f"{name} is missing the key '{key}'.")
    method = np.asarray(data["method"])
    if method.ndim != 0 or method.dtype.kind not in "US":
        raise LayersweepError(f"{name}: key 'method' must be a 0-d string, not {method!r}.")
    ids = [str(c) for c in np.asarray(data["crop_id"]).reshape(-1)]
    target = np.asarray(data["target"])
    if target.dtype.kind not in "iu" or target.shape != (len(ids),):
        raise LayersweepError(f"{name}: key 'target' must hold {len(ids)} integers (one per crop_id), not {target.dtype} {target.shape}.")
    if len(set(ids)) != len(ids):
        raise LayersweepError(f"{name}: key 'crop_id' lists a crop twice.")
    layers = [int(v) for v in np.asarray(data["layers"]).reshape(-1)]
    maps = {}
    for layer in layers:
        key = f"map_{layer}"
        if key not in keys:
            raise LayersweepError(f"{name} is missing the key '{key}' for layer {layer} listed in 'layers'.")
        m = np.asarray(data[key])
        if m.ndim != 3 or len(m) != len(ids) or m.dtype.kind != "f":
            raise LayersweepError(f"{name}: key '{key}' must be a float array (N={len(ids)}, H, W), not {m.dtype} {m.shape}.")
        maps[layer] = m
    prob = np.asarray(data["prob"], dtype=float) if "prob" in keys else None
    return {"name": name, "method": str(method), "crop_id": ids, "target": target.astype(np.int64),
            "layers": layers, "maps": maps, "prob": prob}


def _device(device):
    return resolve_device(device) if isinstance(device, str) else torch.device(device)


def _crop_inputs(crops_uint8, crop_ids, sh: dict, device, preprocessing: Preprocessing = TORCHVISION):
    """The normalised tensor of the shard's crops, in the shard's order."""
    crops = np.asarray(crops_uint8) if not isinstance(crops_uint8, torch.Tensor) else crops_uint8
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype not in (np.uint8, torch.uint8):
        raise LayersweepError(f"crops must be uint8 (N, H, W, 3), not {crops.dtype} {tuple(crops.shape)}.")
    ids = sh["crop_id"]
    if crop_ids is None:  # the crops are the shard's, row for row
        if len(crops) != len(ids):
            raise LayersweepError(f"{len(crops)} crops for the {len(ids)} crop ids of {sh['name']}; pass crop_ids to match them by id.")
        rows = np.arange(len(ids))
    else:
        where = {str(c): i for i, c in enumerate(crop_ids)}
        if len(where) != len(crops):
            raise LayersweepError(f"crop_ids must name each of the {len(crops)} crops once.")
        missing = [c for c in ids if c not in where]
        if missing:
            raise LayersweepError(f"crop id '{missing[0]}' of {sh['name']} is absent from the crops.")
        rows = np.array([where[c] for c in ids], dtype=np.int64)
    return to_model_input(crops[torch.as_tensor(rows) if isinstance(crops, torch.Tensor) else rows], device,
                          preprocessing)


def _layer_groups(layers, n_crops, n_pixels):
    """Consecutive layers whose maps fit one pass of _PASS_BYTES (at least one layer per pass)."""
    per_layer = max(1, n_crops * n_pixels * 16)
    size = max(1, _PASS_BYTES // per_layer)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def _normalized_group(sh, group, size, eps, device):
    n = len(sh["crop_id"])
    maps01 = torch.empty((len(group) * n, *size), device=device)
    const = torch.empty(len(group) * n, dtype=torch.bool, device=device)
    for j, layer in enumerate(group):
        m, c = normalize_maps(torch.from_numpy(sh["maps"][layer]).to(device), size, eps)
        maps01[j * n:(j + 1) * n], const[j * n:(j + 1) * n] = m, c
    return maps01, const


def _check_prob(sh, Y):
    if sh["prob"] is None or sh["prob"].shape != Y.shape:
        return
    gap = np.abs(sh["prob"] - Y)
    if np.nanmax(gap, initial=0.0) > 1e-2:
        i = int(np.nanargmax(gap))
        warnings.warn(f"{sh['name']}: the score of crop '{sh['crop_id'][i]}' recomputed from the crops ({Y[i]:.4f}) "
                      f"differs from the shard's prob ({sh['prob'][i]:.4f}); are the crops or the model different?")


def _prepare(model, crops_uint8, shard, crop_ids, device, preprocessing):
    sh = read_shard(shard)
    dev = _device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every forward of a shard has the crops' fixed size
    x = _crop_inputs(crops_uint8, crop_ids, sh, dev, preprocessing)  # uint8 to the device once, normalised there
    t = torch.as_tensor(sh["target"], device=dev)
    return sh, dev, x, t, model.to(dev).eval()


def _frame(sh, Y, columns: dict) -> pd.DataFrame:
    """Rows layer-major: (layer 0, crop 0..N-1), (layer 1, ...)."""
    n, L = len(sh["crop_id"]), len(sh["layers"])
    head = {
        "crop_id": np.tile(np.array(sh["crop_id"], dtype=object), L),
        "method": sh["method"],
        "layer": np.repeat(np.array(sh["layers"], dtype=np.int64), n),
        "target": np.tile(sh["target"], L),
        "score": np.tile(Y.astype(float), L),
    }
    return pd.DataFrame({**head, **columns})


def _nonconstant_maps(sh, n, size, constant_eps, dev, constant, bar, forwards_per_map):
    """Yield (normalised non-constant maps, their crop index, their rows in the L*n layout) group by group.

    Fills `constant` (L*n, layer-major) and takes the forwards of constant maps off the progress bar.
    """
    done = 0
    for group in _layer_groups(sh["layers"], n, size[0] * size[1]):
        maps01, const = _normalized_group(sh, group, size, constant_eps, dev)
        keep = torch.nonzero(~const)[:, 0]
        constant[done:done + len(const)] = const
        bar.total -= int(const.sum()) * forwards_per_map  # constant maps cost no forward
        bar.refresh()
        if len(keep):  # a group whose maps are all constant (e.g. a dead layer) has nothing to score
            yield maps01[keep], torch.arange(n, device=dev).repeat(len(group))[keep], keep + done
        done += len(const)


def score_shard(model, crops_uint8, shard, *, crop_ids=None, mask_space: str = "normalized",
                curve_points: int = 30, blur_kernel: int = 11, blur_sigma: float = 5.0, batch_size: int = 256,
                constant_eps: float = 1e-6, device="auto", precision: str = "float32",
                progress: bool = True, preprocessing: Preprocessing = TORCHVISION,
                insertion_start: str = "blur") -> pd.DataFrame:
    """AD term, IC indicator and deletion / insertion curves and AUCs of every map of one shard.

    insertion_start: 'blur' (the Gaussian blur of the crop) or 'zero' (the zero model input, LIFT-CAM), the
    image the insertion curve starts from (`crop_scores`).

    preprocessing: the model's (`preprocessing_for(model.source)`), from uint8 crops to its input.
    model: classifier returning logits (moved to `device` and put in eval mode). crops_uint8: (n, H, W, 3) uint8,
    either the shard's crops in its order (crop_ids=None) or any crops with their ids in `crop_ids`.
    shard: path of an attribution npz or the dict of its arrays (module docstring).
    Returns one row per crop x layer: crop_id, method, layer, target, score (Y), explanation_score (O), ad, ic,
    deletion_auc, insertion_auc, deletion_curve, insertion_curve (lists of curve_points floats), constant.
    Constant maps get NaN metrics (and NaN curves). `precision` (float32 | bf16 | float16, `layersweep.precision`)
    is the arithmetic of the model's forwards; maps, ranks, softmax and AUCs are float32 whatever it is.
    """
    check_mask_space(mask_space)
    check_insertion_start(insertion_start)
    check_precision(precision, "metrics.precision")
    counts = curve_counts(curve_points, 1)
    P = len(counts)
    sh, dev, x, t, model = _prepare(model, crops_uint8, shard, crop_ids, device, preprocessing)
    with precision_model(model, dev, precision) as net:
        return _score_plain(net, sh, dev, x, t, mask_space, P, blur_kernel, blur_sigma, batch_size, constant_eps,
                            progress, preprocessing, insertion_start)


def _score_plain(model, sh, dev, x, t, mask_space, P, blur_kernel, blur_sigma, batch_size, constant_eps, progress,
                 preprocessing, insertion_start):
    n, L = len(x), len(sh["layers"])
    size = tuple(x.shape[-2:])
    per_map = 1 + 2 * (P - 2)  # forwards per non-constant map: explanation image + interior curve points
    per_crop = 2 if insertion_start == "blur" else 1  # Y, and the blurred start (a zero start is deletion's end)
    bar = tqdm(total=per_crop * n + 1 + n * L * per_map, desc=f"metrics {sh['method']}", unit="img",
               disable=not progress)
    try:
        base = crop_scores(model, x, t, blur_kernel=blur_kernel, blur_sigma=blur_sigma, batch_size=batch_size,
                           insertion_start=insertion_start, progress=bar)
        O = torch.full((L * n,), float("nan"), device=dev)
        dauc = torch.full((L * n,), float("nan"), dtype=torch.float64, device=dev)
        iauc = torch.full_like(dauc, float("nan"))
        dcurve = torch.full((L * n, P), float("nan"), device=dev)
        icurve = torch.full_like(dcurve, float("nan"))
        constant = torch.ones(L * n, dtype=torch.bool, device=dev)
        for maps01, ci, rows in _nonconstant_maps(sh, n, size, constant_eps, dev, constant, bar, per_map):
            O[rows] = explanation_scores(model, x, maps01, t, crop_index=ci, mask_space=mask_space,
                                         batch_size=batch_size, progress=bar, preprocessing=preprocessing)
            di = deletion_insertion(model, x, maps01, t, crop_index=ci, curve_points=P,
                                    batch_size=batch_size, base=base, progress=bar)
            dauc[rows], iauc[rows] = di["deletion_auc"], di["insertion_auc"]
            dcurve[rows], icurve[rows] = di["deletion_curve"], di["insertion_curve"]
            del maps01, di
    finally:
        bar.close()
    Yt = base["original"].repeat(L)
    Y = base["original"].cpu().numpy()
    _check_prob(sh, Y)
    return _frame(sh, Y, {
        "explanation_score": O.cpu().numpy().astype(float),
        "ad": average_drop_terms(Yt, O).cpu().numpy().astype(float),
        "ic": increase_in_confidence_terms(Yt, O).cpu().numpy().astype(float),
        "deletion_auc": dauc.cpu().numpy(),
        "insertion_auc": iauc.cpu().numpy(),
        "deletion_curve": dcurve.double().cpu().numpy().tolist(),
        "insertion_curve": icurve.double().cpu().numpy().tolist(),
        "constant": constant.cpu().numpy(),
    })


def score_rescaled_shard(model, crops_uint8, shard, *, r: float, rtol: float = 1e-4, crop_ids=None,
                         mask_space: str = "normalized", batch_size: int = 256, constant_eps: float = 1e-6,
                         device="auto", precision: str = "float32", progress: bool = True,
                         preprocessing: Preprocessing = TORCHVISION) -> pd.DataFrame:
    """AD term and IC indicator of every map of one shard after rescaling it to sum r*H*W (`rescale_maps`).

    Deletion and insertion are not recomputed: rescaling keeps the pixel order. Arguments as `score_shard`.
    Returns one row per crop x layer: crop_id, method, layer, target, r, score, explanation_score, ad, ic,
    exponent (p of S**p), clamped (target sum unreachable, p clamped), constant (metrics NaN).
    """
    r = check_r(r)
    check_mask_space(mask_space)
    check_precision(precision, "metrics.precision")
    sh, dev, x, t, model = _prepare(model, crops_uint8, shard, crop_ids, device, preprocessing)
    with precision_model(model, dev, precision) as net:
        return _score_rescaled(net, sh, dev, x, t, r, rtol, mask_space, batch_size, constant_eps, progress,
                               preprocessing)


def _score_rescaled(model, sh, dev, x, t, r, rtol, mask_space, batch_size, constant_eps, progress,
                    preprocessing):
    n, L = len(x), len(sh["layers"])
    size = tuple(x.shape[-2:])
    bar = tqdm(total=n + n * L, desc=f"rescaled metrics {sh['method']} r={r:g}", unit="img", disable=not progress)
    try:
        Yd = image_scores(model, x, t, batch_size=batch_size, progress=bar)
        O = torch.full((L * n,), float("nan"), device=dev)
        p = torch.full((L * n,), float("nan"), dtype=torch.float64, device=dev)
        clamped = torch.zeros(L * n, dtype=torch.bool, device=dev)
        constant = torch.ones(L * n, dtype=torch.bool, device=dev)
        for maps01, ci, rows in _nonconstant_maps(sh, n, size, constant_eps, dev, constant, bar, 1):
            scaled, p[rows], clamped[rows] = rescale_maps(maps01, r, rtol)
            O[rows] = explanation_scores(model, x, scaled, t, crop_index=ci, mask_space=mask_space,
                                         batch_size=batch_size, progress=bar, preprocessing=preprocessing)
            del maps01, scaled
    finally:
        bar.close()
    Yt = Yd.repeat(L)
    Y = Yd.cpu().numpy()
    _check_prob(sh, Y)
    df = _frame(sh, Y, {
        "explanation_score": O.cpu().numpy().astype(float),
        "ad": average_drop_terms(Yt, O).cpu().numpy().astype(float),
        "ic": increase_in_confidence_terms(Yt, O).cpu().numpy().astype(float),
        "exponent": p.cpu().numpy(),
        "clamped": clamped.cpu().numpy(),
        "constant": constant.cpu().numpy(),
    })
    df.insert(4, "r", r)
    return df
