"""Metric `core`: the report's four, Average Drop (AD), Increase in Confidence (IC), and the deletion and
insertion AUCs, computed together so that they share their forwards (docs/metrics.md).

With S the map upsampled to the crop and min-max normalised (`batching.normalize_maps`), Y the crop's softmax score
at its target and O that of its explanation image e = S * x (`batching.explanation_images`, metrics.mask_space):
- AD term = max(0, Y - O) / Y * 100 (lower is better); IC indicator = 1[O > Y] * 100 (higher is better); their
  means over the crops are AD and IC. One forward per map (O): AD and IC share it.
- deletion: the top round(k*H*W) pixels (descending S, stable order) set to 0 in normalised space; insertion:
  start from the Gaussian blur of x (metrics.insertion_start 'blur') or the zero model input ('zero'), restore
  the top pixels from x; k = linspace(0, 1, curve_points); AUC = trapezoid rule over k in [0, 1] (deletion lower
  is better, insertion higher). Both curves come from the same ranks: 2 (curve_points - 2) forwards per map,
  their ends from the crop's own scores (Y, the blur's, the zero image's: `crop_scores`, once per crop).
- rescaled maps (S**p with sum r*H*W, `rescale`): only AD and IC, as rescaling keeps the pixel order.

Its options are the top-level keys metrics.curve_points, blur_kernel, blur_sigma and insertion_start.
`score_shard` / `score_rescaled_shard` are `metric_shard.score_metric_shard("core", ...)` with these as keyword
arguments. On tensors, every function below works on its own (`deletion_insertion`, `crop_scores`, ...).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from ..attribution.registry import Option, choice_option, int_option
from ..errors import LayersweepError
from ..preprocess import TORCHVISION, Preprocessing
from .batching import as_crop_index, as_pair, check_map_size, explanation_scores, score_batches
from .registry import CORE, float_option, register
from .rescale import rescale_maps

# Where the insertion curve starts (k = 0): the Gaussian blur of the crop (the report), or the zero image of
# the model input (LIFT-CAM's M_0 * x), i.e. deletion's end point, whatever metrics.mask_space says.
INSERTION_STARTS = ("blur", "zero")


def blur_images(x: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur of an image batch (N, C, H, W): torchvision's `gaussian_blur`, i.e. a separable
    kernel x kernel Gaussian with *reflect* padding, so the output keeps the input size."""
    if int(kernel) != kernel or kernel < 1 or kernel % 2 == 0:
        raise LayersweepError(f"config key 'metrics.blur_kernel' must be an odd positive integer, not {kernel!r}.")
    if not sigma > 0:
        raise LayersweepError(f"config key 'metrics.blur_sigma' must be positive, not {sigma!r}.")
    if kernel == 1:
        return x.clone()
    return gaussian_blur(x, kernel_size=[int(kernel)] * 2, sigma=[float(sigma)] * 2)


def check_insertion_start(insertion_start: str) -> str:
    if insertion_start not in INSERTION_STARTS:
        raise LayersweepError(f"config key 'metrics.insertion_start' has the unknown value {insertion_start!r}; use 'blur' or 'zero'.")
    return insertion_start


# ----------------------------------------------------------------------------------------------------------
# Average Drop and Increase in Confidence
# ----------------------------------------------------------------------------------------------------------
def average_drop_terms(Y, O):
    """Per-image Average Drop term max(0, Y - O) / Y * 100 (Y: score of the image, O: of the explanation).

    Y == 0 (a softmax underflow) gives 0: there is nothing left to drop. NaN in Y or O gives NaN.
    Works on numpy arrays and torch tensors alike.
    """
    xp, Y, O = as_pair(Y, O)
    drop = xp.maximum(Y - O, xp.zeros_like(Y)) if xp is torch else np.maximum(Y - O, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = xp.where(Y == 0, drop * 0, drop / xp.where(Y == 0, xp.ones_like(Y), Y))
    return ratio * 100


def increase_in_confidence_terms(Y, O):
    """Per-image Increase in Confidence indicator 1[O > Y] * 100 (0 or 100; NaN where Y or O is NaN)."""
    xp, Y, O = as_pair(Y, O)
    ind = (O > Y) * 100.0 if xp is np else (O > Y).to(Y.dtype) * 100
    bad = xp.isnan(Y) | xp.isnan(O)
    return xp.where(bad, Y * np.nan if xp is np else torch.full_like(Y, float("nan")), ind)


def _nanmean(v):
    return torch.nanmean(v) if isinstance(v, torch.Tensor) else np.nanmean(v)


def average_drop(Y, O):
    """AD = mean over images of max(0, Y - O) / Y * 100 (NaN terms, i.e. constant maps, left out)."""
    return _nanmean(average_drop_terms(Y, O))


def increase_in_confidence(Y, O):
    """IC = mean over images of 1[O > Y] * 100 (NaN terms, i.e. constant maps, left out)."""
    return _nanmean(increase_in_confidence_terms(Y, O))


# ----------------------------------------------------------------------------------------------------------
# deletion and insertion
# ----------------------------------------------------------------------------------------------------------
def crop_scores(model, x: torch.Tensor, targets, *, blur_kernel: int = 11, blur_sigma: float = 5.0,
                batch_size: int = 256, blurred: torch.Tensor | None = None, insertion_start: str = "blur",
                progress=False) -> dict:
    """The scores every map of a crop shares, computed once per crop.

    Returns {'original': Y (N,), 'blurred': score of insertion's start image (k=0), 'deleted': score of the
    all-zero image (deletion k=1; one forward serves every crop), 'blurred_images': insertion's start images}.
    Insertion k=1 and deletion k=0 are Y. insertion_start 'blur' starts insertion from the Gaussian blur of x
    (or from `blurred` when given); 'zero' from the zero tensor of the model input (LIFT-CAM), the same image
    as deletion's end, so its score is 'deleted' and costs no forward of its own.
    """
    check_insertion_start(insertion_start)
    t = torch.as_tensor(targets, device=x.device).long()
    with torch.no_grad():  # the deleted image is all zeros for every crop: one forward, indexed by target
        zero_probs = torch.softmax(model(torch.zeros_like(x[:1])).float(), dim=1)[0]
    if not isinstance(progress, bool):
        progress.update(1)
    n_classes = len(zero_probs)
    bad = (t < 0) | (t >= n_classes)
    if bool(bad.any()):
        raise LayersweepError(f"target class {int(t[bad][0])} is outside the model's {n_classes} classes.")
    if insertion_start == "zero":
        Y = score_batches(model, len(x), lambda i: (x[i], t[i]), batch_size, x.device, progress, "crop scores")
        return {"original": Y, "blurred": zero_probs[t], "deleted": zero_probs[t],
                "blurred_images": torch.zeros_like(x)}
    if blurred is None:
        blurred = blur_images(x, blur_kernel, blur_sigma)
    n = len(x)
    both = torch.cat([t, t])

    def make(i):  # items 0..n-1: originals, n..2n-1: blurred images
        return torch.where((i < n).view(-1, 1, 1, 1), x[i % n], blurred[i % n]), both[i]

    s = score_batches(model, 2 * n, make, batch_size, x.device, progress, "crop scores")
    return {"original": s[:n], "blurred": s[n:], "deleted": zero_probs[t], "blurred_images": blurred}


def curve_counts(curve_points: int, n_pixels: int) -> np.ndarray:
    """Pixels removed (deletion) or restored (insertion) at each curve point: k = linspace(0, 1, curve_points),
    count = floor(k * n_pixels + 0.5), i.e. round half up (numpy's round would go half-to-even)."""
    if int(curve_points) != curve_points or curve_points < 2:
        raise LayersweepError(f"config key 'metrics.curve_points' must be an integer of at least 2, not {curve_points!r}.")
    k = np.linspace(0.0, 1.0, int(curve_points))
    return np.floor(k * n_pixels + 0.5).astype(np.int64)


def pixel_ranks(maps01: torch.Tensor) -> torch.Tensor:
    """rank[m, p] = position of pixel p when map m is sorted by descending value (stable: ties keep pixel
    order). 'the top n pixels' is then simply `rank < n`, so every curve point is one comparison.
    Ranks always come from float32 values: maps computed in bf16 / float16 are widened first, so the order
    of their (many more) ties is the same stable pixel order on every device and in every precision."""
    flat = maps01.reshape(len(maps01), -1).float()
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    dtype = torch.int32 if flat.shape[1] < 2**31 else torch.int64
    rank = torch.empty(order.shape, dtype=dtype, device=flat.device)
    rank.scatter_(1, order, torch.arange(flat.shape[1], dtype=dtype, device=flat.device).expand_as(order))
    return rank


def deletion_insertion(model, x: torch.Tensor, maps01: torch.Tensor, targets, *, crop_index=None,
                       curve_points: int = 30, blur_kernel: int = 11, blur_sigma: float = 5.0,
                       batch_size: int = 256, base: dict | None = None, insertion_start: str = "blur",
                       progress=False) -> dict:
    """Deletion and insertion curves and their AUCs for M normalised maps.

    Deletion: the top round(k*H*W) pixels (descending map value, stable order) set to 0 in normalised space.
    Insertion: start from the Gaussian blur of x (`blur_images`; insertion_start 'blur') or from the zero
    tensor of the model input ('zero', LIFT-CAM's M_delta * x), restore the top pixels from x. A given `base`
    carries its start images (`crop_scores(..., insertion_start=...)`), and then insertion_start is unused.
    k = linspace(0, 1, curve_points); AUC = trapezoid rule over k in [0, 1].
    Only the interior points (0 < k < 1) cost forwards: k=0 and k=1 come from `base` (`crop_scores`, computed
    here if not given). Interior images of many maps share each forward batch of `batch_size` images.

    Returns {'k': (P,), 'deletion_curve': (M, P), 'insertion_curve': (M, P), 'deletion_auc': (M,),
    'insertion_auc': (M,)} as tensors on x.device.
    """
    dev = x.device
    M = len(maps01)
    H, W = x.shape[-2:]
    check_map_size(maps01, x)
    ci = as_crop_index(crop_index, M, len(x), dev)
    t = torch.as_tensor(targets, device=dev).long()
    counts = curve_counts(curve_points, H * W)
    P = len(counts)
    if base is None:
        base = crop_scores(model, x, t, blur_kernel=blur_kernel, blur_sigma=blur_sigma, batch_size=batch_size,
                           insertion_start=insertion_start,
                           progress=progress if not isinstance(progress, bool) else False)
    blurred = base["blurred_images"]
    n_inner = P - 2
    inner = torch.as_tensor(counts[1:-1], device=dev)
    rank = pixel_ranks(maps01.to(dev))

    def make(i):
        # item i -> map m, then n_inner deletion points followed by n_inner insertion points
        m = torch.div(i, 2 * n_inner, rounding_mode="floor")
        rem = i - m * 2 * n_inner
        ins = rem >= n_inner
        n = inner[rem - ins.long() * n_inner]
        c = ci[m]
        top = (rank[m] < n[:, None]).view(-1, 1, H, W)
        xc = x[c]
        ins4 = ins.view(-1, 1, 1, 1)
        at_top = xc * ins4             # top pixels: x restored (insertion) or 0 (deletion)
        rest = torch.where(ins4, blurred[c], xc)  # the others: blurred (insertion) or kept (deletion)
        return torch.where(top, at_top, rest), t[c]

    n_items = M * 2 * n_inner
    s = score_batches(model, n_items, make, batch_size, dev, progress, "deletion/insertion")
    s = s.view(M, 2, n_inner)
    Y, Yb, Yz = base["original"][ci], base["blurred"][ci], base["deleted"][ci]
    deletion = torch.cat([Y[:, None], s[:, 0], Yz[:, None]], dim=1)
    insertion = torch.cat([Yb[:, None], s[:, 1], Y[:, None]], dim=1)
    k = torch.linspace(0, 1, P, device=dev, dtype=torch.float64)
    return {
        "k": k,
        "deletion_curve": deletion,
        "insertion_curve": insertion,
        "deletion_auc": torch.trapezoid(deletion.double(), k, dim=1),
        "insertion_auc": torch.trapezoid(insertion.double(), k, dim=1),
    }


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    return _score_plain(ctx) if ctx.r is None else _score_rescaled(ctx)


def _score_plain(ctx) -> dict:
    """AD term, IC indicator, deletion / insertion curves and AUCs of every map; the crops' scores from the
    crop_scores forwards (shared with the curves' ends)."""
    opts = ctx.options
    insertion_start = check_insertion_start(opts["insertion_start"])
    P = len(curve_counts(opts["curve_points"], 1))
    n, L = ctx.n, len(ctx.layers)
    per_map = 1 + 2 * (P - 2)  # forwards per non-constant map: explanation image + interior curve points
    per_crop = 2 if insertion_start == "blur" else 1  # Y, and the blurred start (a zero start is deletion's end)
    ctx.add_work(per_crop * n + 1 + n * L * per_map)
    progress = ctx.progress or False
    base = crop_scores(ctx.model, ctx.x, ctx.targets, blur_kernel=opts["blur_kernel"], blur_sigma=opts["blur_sigma"],
                       batch_size=ctx.batch_size, insertion_start=insertion_start, progress=progress)
    ctx.set_scores(base["original"])
    dev = ctx.device
    O = torch.full((L * n,), float("nan"), device=dev)
    dauc = torch.full((L * n,), float("nan"), dtype=torch.float64, device=dev)
    iauc = torch.full_like(dauc, float("nan"))
    dcurve = torch.full((L * n, P), float("nan"), device=dev)
    icurve = torch.full_like(dcurve, float("nan"))
    for maps01, ci, rows in ctx.groups(rescale=False, forwards_per_map=per_map):
        O[rows] = explanation_scores(ctx.model, ctx.x, maps01, ctx.targets, crop_index=ci, mask_space=ctx.mask_space,
                                     batch_size=ctx.batch_size, progress=progress, preprocessing=ctx.preprocessing)
        di = deletion_insertion(ctx.model, ctx.x, maps01, ctx.targets, crop_index=ci, curve_points=P,
                                batch_size=ctx.batch_size, base=base, progress=progress)
        dauc[rows], iauc[rows] = di["deletion_auc"], di["insertion_auc"]
        dcurve[rows], icurve[rows] = di["deletion_curve"], di["insertion_curve"]
        del maps01, di
    Yt = base["original"].repeat(L)
    return {
        "explanation_score": O.cpu().numpy().astype(float),
        "ad": average_drop_terms(Yt, O),
        "ic": increase_in_confidence_terms(Yt, O),
        "deletion_auc": dauc,
        "insertion_auc": iauc,
        "deletion_curve": dcurve.double().cpu().numpy().tolist(),
        "insertion_curve": icurve.double().cpu().numpy().tolist(),
    }


def _score_rescaled(ctx) -> dict:
    """AD term and IC indicator of every map rescaled to sum r*H*W (deletion and insertion are not recomputed:
    rescaling keeps the pixel order), with the exponent p of S**p and whether it was clamped."""
    n, L = ctx.n, len(ctx.layers)
    ctx.add_work(n * L)
    Y = ctx.Y
    dev = ctx.device
    O = torch.full((L * n,), float("nan"), device=dev)
    p = torch.full((L * n,), float("nan"), dtype=torch.float64, device=dev)
    clamped = torch.zeros(L * n, dtype=torch.bool, device=dev)
    for maps01, ci, rows in ctx.groups(rescale=False, forwards_per_map=1):
        scaled, p[rows], clamped[rows] = rescale_maps(maps01, ctx.r, ctx.rtol)
        O[rows] = explanation_scores(ctx.model, ctx.x, scaled, ctx.targets, crop_index=ci, mask_space=ctx.mask_space,
                                     batch_size=ctx.batch_size, progress=ctx.progress or False,
                                     preprocessing=ctx.preprocessing)
        del maps01, scaled
    Yt = Y.repeat(L)
    return {
        "explanation_score": O.cpu().numpy().astype(float),
        "ad": average_drop_terms(Yt, O),
        "ic": increase_in_confidence_terms(Yt, O),
        "exponent": p.cpu().numpy(),
        "clamped": clamped.cpu().numpy(),
    }


def _odd_kernel(k) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 101 and k % 2 == 1


def _cost(opts, n_layers) -> dict:
    """1 forward per map (O) + 2 (curve_points - 2) (the curves' interior points), and per crop its score and
    the blurred start (one for a zero start): spread over the crop's maps."""
    per_crop = 2 if opts["insertion_start"] == "blur" else 1
    return {"forwards_per_map": 1 + 2 * (opts["curve_points"] - 2) + per_crop / max(n_layers, 1),
            "attribution_passes_per_crop": 0}


register(
    CORE,
    columns={"ad": "lower", "ic": "higher", "deletion_auc": "lower", "insertion_auc": "higher"},
    needs=("forwards",),
    rescaled=("ad", "ic"),
    score=_score,
    options={"curve_points": int_option(30, 2, 1001),
             "blur_kernel": Option(11, _odd_kernel, "an odd integer in 1..101"),
             "blur_sigma": float_option(5.0, 0.0, float("inf"), open_low=True),
             "insertion_start": choice_option("blur", INSERTION_STARTS)},
    top_level_options=True,
    cost=_cost,
    reference="Chattopadhyay et al., WACV 2018 (AD, IC); Petsiuk et al., BMVC 2018 (deletion, insertion)",
    definition="AD = mean max(0, Y - O) / Y x 100, IC = mean 1[O > Y] x 100 with O the score of S x; deletion / "
               "insertion AUC: the score as the top-ranked pixels are removed from x / restored into its blur",
)


# ----------------------------------------------------------------------------------------------------------
# stage functions with core's options as keyword arguments
# ----------------------------------------------------------------------------------------------------------
def score_shard(model, crops_uint8, shard, *, crop_ids=None, mask_space: str = "normalized",
                curve_points: int = 30, blur_kernel: int = 11, blur_sigma: float = 5.0, batch_size: int = 256,
                constant_eps: float = 1e-6, device="auto", precision: str = "float32",
                progress: bool = True, preprocessing: Preprocessing = TORCHVISION,
                insertion_start: str = "blur"):
    """AD term, IC indicator and deletion / insertion curves and AUCs of every map of one shard: metric core
    through `score_metric_shard` (its arguments).

    Returns one row per crop x layer: crop_id, method, layer, target, score (Y), explanation_score (O), ad, ic,
    deletion_auc, insertion_auc, deletion_curve, insertion_curve (lists of curve_points floats), constant.
    Constant maps get NaN metrics (and NaN curves). `precision` (float32 | bf16 | float16, `layersweep.precision`)
    is the arithmetic of the model's forwards; maps, ranks, softmax and AUCs are float32 whatever it is.
    """
    from .metric_shard import score_metric_shard

    options = dict(curve_points=curve_points, blur_kernel=blur_kernel, blur_sigma=blur_sigma,
                   insertion_start=insertion_start)
    return score_metric_shard(CORE, model, crops_uint8, shard, crop_ids=crop_ids, options=options,
                              mask_space=mask_space, batch_size=batch_size, constant_eps=constant_eps, device=device,
                              precision=precision, progress=progress, preprocessing=preprocessing)


def score_rescaled_shard(model, crops_uint8, shard, *, r: float, rtol: float = 1e-4, crop_ids=None,
                         mask_space: str = "normalized", batch_size: int = 256, constant_eps: float = 1e-6,
                         device="auto", precision: str = "float32", progress: bool = True,
                         preprocessing: Preprocessing = TORCHVISION):
    """AD term and IC indicator of every map of one shard after rescaling it to sum r*H*W (`rescale_maps`): metric
    core's rescaled scoring through `score_metric_shard`.

    Returns one row per crop x layer: crop_id, method, layer, target, r, score, explanation_score, ad, ic,
    exponent (p of S**p), clamped (target sum unreachable, p clamped), constant (metrics NaN).
    """
    from .metric_shard import score_metric_shard

    return score_metric_shard(CORE, model, crops_uint8, shard, r=r, rtol=rtol, crop_ids=crop_ids,
                              mask_space=mask_space, batch_size=batch_size, constant_eps=constant_eps, device=device,
                              precision=precision, progress=progress, preprocessing=preprocessing)
