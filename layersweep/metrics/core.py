"""Per-map scores on tensors: map normalisation, Average Drop / Increase in Confidence, deletion / insertion.

Conventions (PROTOCOL.md, "Metrics"):
- score = softmax over the logits, taken at the target class (the ground-truth label);
- `x` is the *normalised* image batch (N, 3, H, W) of the crops, `targets` is (N,) int64;
- a batch of M maps refers to its crops through `crop_index` (M,), so the L maps of one crop (one per layer)
  share the crop's tensor, blurred image and base scores instead of copying them;
- everything runs on `x.device`; the model must already sit there, in eval mode.

Every forward pass goes through `_score_batches`, which builds each batch of perturbed images on the device
from index arithmetic (no per-point trip to the CPU) and keeps the scores on the device until the end.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from ..errors import LayersweepError
from ..preprocess import TORCHVISION, Preprocessing, denormalize, normalize

MASK_SPACES = ("normalized", "pixel")
# Where the insertion curve starts (k = 0): the Gaussian blur of the crop (the report), or the zero image of
# the model input (LIFT-CAM's M_0 * x), i.e. deletion's end point, whatever metrics.mask_space says.
INSERTION_STARTS = ("blur", "zero")


# ----------------------------------------------------------------------------------------------------------
# maps
# ----------------------------------------------------------------------------------------------------------
def normalize_maps(maps, size, eps: float = 1e-6):
    """Upsample maps (N, h, w) bilinearly (align_corners=False) to `size` and min-max normalise each to [0, 1].

    Returns (maps01, constant): float32 (N, H, W) on the maps' device, and bool (N,). A map whose range
    (max - min, after upsampling) is below `eps`, or that holds a non-finite value, cannot be normalised:
    it is flagged in `constant` and returned as zeros, and callers give it NaN metrics.
    """
    m = torch.as_tensor(maps)
    if m.ndim != 3:
        raise LayersweepError(f"maps must have shape (N, h, w), not {tuple(m.shape)}.")
    H, W = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    m = m.float()  # float16 shards are upsampled in float32
    if len(m) == 0:
        return m.new_zeros((0, H, W)), torch.zeros(0, dtype=torch.bool, device=m.device)
    if tuple(m.shape[-2:]) != (H, W):
        m = F.interpolate(m[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    flat = m.reshape(len(m), -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    span = hi - lo
    constant = ~(span >= eps) | ~torch.isfinite(flat).all(dim=1)  # `~(>=)` also catches NaN spans
    safe = torch.where(constant, torch.ones_like(span), span)
    # (hi - lo) / span is exactly 1.0 in IEEE arithmetic, so every map keeps a pixel at 1 and one at 0
    out = (m - lo[:, None, None]) / safe[:, None, None]
    out = torch.where(constant[:, None, None], torch.zeros_like(out), out)
    return out, constant


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


def check_mask_space(mask_space: str) -> str:
    if mask_space not in MASK_SPACES:
        raise LayersweepError(f"config key 'metrics.mask_space' has the unknown value {mask_space!r}; use 'normalized' or 'pixel'.")
    return mask_space


# ----------------------------------------------------------------------------------------------------------
# Average Drop and Increase in Confidence
# ----------------------------------------------------------------------------------------------------------
def _pair(Y, O):
    if isinstance(Y, torch.Tensor) or isinstance(O, torch.Tensor):
        Y = torch.as_tensor(Y)
        O = torch.as_tensor(O, device=Y.device)
        dt = torch.promote_types(torch.promote_types(Y.dtype, O.dtype), torch.float32)
        return torch, Y.to(dt), O.to(dt)
    Y, O = np.asarray(Y, dtype=float), np.asarray(O, dtype=float)
    return np, Y, O


def average_drop_terms(Y, O):
    """Per-image Average Drop term max(0, Y - O) / Y * 100 (Y: score of the image, O: of the explanation).

    Y == 0 (a softmax underflow) gives 0: there is nothing left to drop. NaN in Y or O gives NaN.
    Works on numpy arrays and torch tensors alike.
    """
    xp, Y, O = _pair(Y, O)
    drop = xp.maximum(Y - O, xp.zeros_like(Y)) if xp is torch else np.maximum(Y - O, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = xp.where(Y == 0, drop * 0, drop / xp.where(Y == 0, xp.ones_like(Y), Y))
    return ratio * 100


def increase_in_confidence_terms(Y, O):
    """Per-image Increase in Confidence indicator 1[O > Y] * 100 (0 or 100; NaN where Y or O is NaN)."""
    xp, Y, O = _pair(Y, O)
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
# batched scoring
# ----------------------------------------------------------------------------------------------------------
def target_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[i, targets[i]], in float32."""
    return torch.softmax(logits.float(), dim=1).gather(1, targets.long()[:, None])[:, 0]


def _bar(progress, total, desc):
    """`progress` is a bool (own bar) or an existing tqdm bar (shared by a whole stage)."""
    if isinstance(progress, tqdm):
        return progress, False
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False), True


@torch.no_grad()
def _score_batches(model, n_items: int, make_batch, batch_size: int, device, progress, desc: str) -> torch.Tensor:
    """Scores of `n_items` images, `batch_size` per forward; make_batch(idx) -> (images, targets) on device."""
    if batch_size < 1:
        raise LayersweepError(f"config key 'metrics.batch_size' must be at least 1, not {batch_size!r}.")
    out = torch.empty(n_items, device=device)
    bar, own = _bar(progress, n_items, desc)
    try:
        for start in range(0, n_items, batch_size):
            stop = min(start + batch_size, n_items)
            images, tg = make_batch(torch.arange(start, stop, device=device))
            out[start:stop] = target_probs(model(images), tg)
            bar.update(stop - start)
    finally:
        if own:
            bar.close()
    return out


def _as_index(crop_index, n_maps: int, n_crops: int, device) -> torch.Tensor:
    if crop_index is None:
        if n_maps != n_crops:
            raise LayersweepError(f"{n_maps} maps for {n_crops} crops: pass crop_index to say which crop each map belongs to.")
        return torch.arange(n_maps, device=device)
    ci = torch.as_tensor(crop_index, device=device).long()
    if ci.shape != (n_maps,):
        raise LayersweepError(f"crop_index must have one entry per map ({n_maps}), not shape {tuple(ci.shape)}.")
    return ci


def image_scores(model, x: torch.Tensor, targets, *, batch_size: int = 256, progress=False) -> torch.Tensor:
    """Y = softmax score of each image of `x` at its target class, batched."""
    t = torch.as_tensor(targets, device=x.device).long()
    return _score_batches(model, len(x), lambda i: (x[i], t[i]), batch_size, x.device, progress, "score")


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
        Y = _score_batches(model, len(x), lambda i: (x[i], t[i]), batch_size, x.device, progress, "crop scores")
        return {"original": Y, "blurred": zero_probs[t], "deleted": zero_probs[t],
                "blurred_images": torch.zeros_like(x)}
    if blurred is None:
        blurred = blur_images(x, blur_kernel, blur_sigma)
    n = len(x)
    both = torch.cat([t, t])

    def make(i):  # items 0..n-1: originals, n..2n-1: blurred images
        return torch.where((i < n).view(-1, 1, 1, 1), x[i % n], blurred[i % n]), both[i]

    s = _score_batches(model, 2 * n, make, batch_size, x.device, progress, "crop scores")
    return {"original": s[:n], "blurred": s[n:], "deleted": zero_probs[t], "blurred_images": blurred}


def explanation_images(x: torch.Tensor, maps01: torch.Tensor, mask_space: str = "normalized",
                       preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    """e = S * x (mask_space 'normalized', x the normalised tensor) or e = normalize(S * pixels) ('pixel'),
    with the model's `preprocessing` (model.source) between pixels and x.

    x and maps01 are aligned (same first dimension); S is broadcast over the colour channels.
    """
    check_mask_space(mask_space)
    s = maps01[:, None].to(x.dtype)
    if mask_space == "normalized":
        return s * x
    return normalize(s * denormalize(x, preprocessing), preprocessing)


def explanation_scores(model, x: torch.Tensor, maps01: torch.Tensor, targets, *, crop_index=None,
                       mask_space: str = "normalized", batch_size: int = 256, progress=False,
                       preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    """O = score of the explanation image of each map (M,), with the target class of the map's crop.
    `preprocessing` (the model's, from model.source) matters only for mask_space 'pixel'."""
    check_mask_space(mask_space)
    ci = _as_index(crop_index, len(maps01), len(x), x.device)
    t = torch.as_tensor(targets, device=x.device).long()
    maps01 = maps01.to(x.device)

    def make(i):
        c = ci[i]
        return explanation_images(x[c], maps01[i], mask_space, preprocessing), t[c]

    return _score_batches(model, len(maps01), make, batch_size, x.device, progress, "explanation")


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
    if tuple(maps01.shape[-2:]) != (H, W):
        raise LayersweepError(f"maps of size {tuple(maps01.shape[-2:])} do not match the crops' size {(H, W)}; normalise them first.")
    ci = _as_index(crop_index, M, len(x), dev)
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
    s = _score_batches(model, n_items, make, batch_size, dev, progress, "deletion/insertion")
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
