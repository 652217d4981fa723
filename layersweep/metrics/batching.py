"""What every metric shares: maps normalised a group of layers at a time, forwards in batches, explanation
images, the crop each map belongs to, and the progress bar. Public: the metric files import these, and nothing
private, from here.

Conventions:
- score = softmax over the logits, taken at the target class (the ground-truth label);
- `x` is the *normalised* image batch (N, 3, H, W) of the crops, `targets` is (N,) int64;
- a batch of M maps refers to its crops through `crop_index` (M,), so the L maps of one crop (one per layer)
  share the crop's tensor and scores instead of copying them;
- rows of a shard's L layers x n crops are layer-major: row = layer position * n + crop position;
- everything runs on `x.device`; the model must already sit there, in eval mode.

Every forward pass goes through `score_batches`, which builds each batch of perturbed images on the device from
index arithmetic (no per-point trip to the CPU) and keeps the scores on the device until the end.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import LayersweepError
from ..preprocess import TORCHVISION, Preprocessing, denormalize, normalize

MASK_SPACES = ("normalized", "pixel")
# maps of one pass: float32 maps + int32 ranks + the int64 argsort they come from, 16 bytes per pixel
PASS_BYTES = 2**29


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


def layer_groups(layers, n_crops: int, n_pixels: int) -> list[list]:
    """Consecutive layers whose maps fit one pass of PASS_BYTES (at least one layer per pass)."""
    per_layer = max(1, n_crops * n_pixels * 16)
    size = max(1, PASS_BYTES // per_layer)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def normalized_group(maps: dict, group, n: int, size, eps: float, device):
    """The normalised maps of the layers of `group` (layer-major, (len(group) * n, H, W)) and their flags."""
    maps01 = torch.empty((len(group) * n, *size), device=device)
    const = torch.empty(len(group) * n, dtype=torch.bool, device=device)
    for j, layer in enumerate(group):
        m, c = normalize_maps(torch.from_numpy(np.asarray(maps[layer])).to(device), size, eps)
        maps01[j * n:(j + 1) * n], const[j * n:(j + 1) * n] = m, c
    return maps01, const


def map_groups(maps: dict, layers, n: int, size, eps: float, device, constant: torch.Tensor | None = None,
               progress=None, forwards_per_map: float = 0):
    """Yield (normalised non-constant maps, their crop index, their rows in the L*n layout) group by group
    (`layer_groups`): a bounded number of layers at a time.

    maps: {layer: (n, h, w)}; `constant` (L*n bool, layer-major), when given, is filled with the flags. A tqdm
    `progress` bar loses the forwards of the constant maps (`forwards_per_map` each): they cost none.
    """
    done = 0
    for group in layer_groups(list(layers), n, size[0] * size[1]):
        maps01, const = normalized_group(maps, group, n, size, eps, device)
        keep = torch.nonzero(~const)[:, 0]
        if constant is not None:
            constant[done:done + len(const)] = const
        if isinstance(progress, tqdm) and forwards_per_map:
            progress.total -= int(const.sum()) * forwards_per_map
            progress.refresh()
        if len(keep):  # a group whose maps are all constant (e.g. a dead layer) has nothing to score
            yield maps01[keep], torch.arange(n, device=device).repeat(len(group))[keep], keep + done
        done += len(const)


# ----------------------------------------------------------------------------------------------------------
# batched forwards
# ----------------------------------------------------------------------------------------------------------
def target_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[i, targets[i]], in float32."""
    return torch.softmax(logits.float(), dim=1).gather(1, targets.long()[:, None])[:, 0]


def progress_bar(progress, total: int, desc: str):
    """(bar, own): `progress` is a bool (a bar of its own, closed by the caller when `own`) or an existing tqdm
    bar (shared by a whole stage)."""
    if isinstance(progress, tqdm):
        return progress, False
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False), True


@torch.no_grad()
def score_batches(model, n_items: int, make_batch, batch_size: int, device, progress, desc: str) -> torch.Tensor:
    """Scores of `n_items` images, `batch_size` per forward; make_batch(idx) -> (images, targets) on device."""
    if batch_size < 1:
        raise LayersweepError(f"config key 'metrics.batch_size' must be at least 1, not {batch_size!r}.")
    out = torch.empty(n_items, device=device)
    bar, own = progress_bar(progress, n_items, desc)
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


def check_map_size(maps01: torch.Tensor, x: torch.Tensor) -> None:
    """Maps (M, H, W) at the crops' (N, C, H, W) size, else one sentence: they must be normalised first."""
    H, W = x.shape[-2:]
    if tuple(maps01.shape[-2:]) != (H, W):
        raise LayersweepError(f"maps of size {tuple(maps01.shape[-2:])} do not match the crops' size {(H, W)}; "
                              "normalise them first.")


def as_crop_index(crop_index, n_maps: int, n_crops: int, device) -> torch.Tensor:
    """The crop of each of `n_maps` maps as an int64 tensor; None = map i belongs to crop i."""
    if crop_index is None:
        if n_maps != n_crops:
            raise LayersweepError(f"{n_maps} maps for {n_crops} crops: pass crop_index to say which crop each map belongs to.")
        return torch.arange(n_maps, device=device)
    ci = torch.as_tensor(crop_index, device=device).long()
    if ci.shape != (n_maps,):
        raise LayersweepError(f"crop_index must have one entry per map ({n_maps}), not shape {tuple(ci.shape)}.")
    return ci


def as_pair(Y, O):
    """(xp, Y, O): numpy arrays in float64, or torch tensors in a common float dtype (>= float32) on Y's device,
    with xp the module to compute with; for the per-image terms that work on both."""
    if isinstance(Y, torch.Tensor) or isinstance(O, torch.Tensor):
        Y = torch.as_tensor(Y)
        O = torch.as_tensor(O, device=Y.device)
        dt = torch.promote_types(torch.promote_types(Y.dtype, O.dtype), torch.float32)
        return torch, Y.to(dt), O.to(dt)
    Y, O = np.asarray(Y, dtype=float), np.asarray(O, dtype=float)
    return np, Y, O


def image_scores(model, x: torch.Tensor, targets, *, batch_size: int = 256, progress=False) -> torch.Tensor:
    """Y = softmax score of each image of `x` at its target class, batched."""
    t = torch.as_tensor(targets, device=x.device).long()
    return score_batches(model, len(x), lambda i: (x[i], t[i]), batch_size, x.device, progress, "score")


# ----------------------------------------------------------------------------------------------------------
# explanation images: the map multiplies the image (metrics.mask_space)
# ----------------------------------------------------------------------------------------------------------
def check_mask_space(mask_space: str) -> str:
    if mask_space not in MASK_SPACES:
        raise LayersweepError(f"config key 'metrics.mask_space' has the unknown value {mask_space!r}; use 'normalized' or 'pixel'.")
    return mask_space


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
                       preprocessing: Preprocessing = TORCHVISION, complement: bool = False) -> torch.Tensor:
    """O = score of the explanation image of each map (M,), with the target class of the map's crop.
    `preprocessing` (the model's, from model.source) matters only for mask_space 'pixel'. `complement`: the
    image of 1 - S instead (ADD's deletion image), built per batch so that the maps are not copied."""
    check_mask_space(mask_space)
    ci = as_crop_index(crop_index, len(maps01), len(x), x.device)
    t = torch.as_tensor(targets, device=x.device).long()
    maps01 = maps01.to(x.device)

    def make(i):
        c = ci[i]
        return explanation_images(x[c], 1 - maps01[i] if complement else maps01[i], mask_space, preprocessing), t[c]

    return score_batches(model, len(maps01), make, batch_size, x.device, progress,
                         "deletion image" if complement else "explanation")
