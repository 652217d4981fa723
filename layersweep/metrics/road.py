"""ROAD (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022) as pytorch-grad-cam 1.5.7's `metrics/road.py`
computes it, for many maps at once.

For a map S (the upsampled, min-max normalised map, `maps01`) and a percentile p, pytorch-grad-cam
(`RemoveMostRelevantFirst` / `RemoveLeastRelevantFirst`, then `NoisyLinearImputer`):

- MoRF keeps the pixels with S < t_p(S) and imputes the others (S >= t_p: the most relevant (100 - p) %);
  LeRF keeps the pixels with (1 - S) < t_p(1 - S) and imputes the least relevant (100 - p) %. t_p is numpy's
  `np.percentile(., p)` (linear interpolation), reproduced here bit for bit in float32, ties included. The
  masks depend on the order of the map's values only (a monotone map of S gives the same masks), so ROAD has no
  rescaled variant.
- Noisy linear imputation: every imputed pixel is the weighted mean of its 8 neighbours inside the image
  (weights 1/6 for the 4 edge neighbours, 1/12 for the 4 corner ones, renormalised at the image border), known
  neighbours entering as constants. That is one sparse linear system per (image, mask), shared by the colour
  channels, on the model input (the normalised tensor, as pytorch-grad-cam is given it). Then N(0, noise^2)
  noise (absolute, in model-input units, default 0.01) is added to each imputed value.
- Score: the target's softmax probability of the imputed image minus that of x (pytorch-grad-cam's
  `ClassifierOutputSoftmaxTarget` with `return_diff=True`), averaged over the percentiles: road_morf (lower is
  better: removing the most relevant pixels should hurt), road_lerf (higher is better), and
  road_combined = (road_lerf - road_morf) / 2 (`ROADCombined`, higher is better).

A map whose p-th percentile equals its minimum (p % or more of its pixels tied at the minimum, e.g. a ReLU'd CAM
with many zeros) keeps no pixel in MoRF: the system is singular with a zero right-hand side, and pytorch-grad-cam's
solver returns 0, i.e. every pixel becomes the noise around the mean pixel. The same is done here.

What is batched: the masks of every map and percentile are built at once on the device; the imputed images of
many maps and percentiles share each forward batch; the linear systems are solved once per (image, mask), either
directly (SuperLU on the CPU, as pytorch-grad-cam, but assembled with array arithmetic and ordered for a
symmetric matrix) or, on a GPU, all masks of a batch together by conjugate gradients preconditioned with a
multigrid V-cycle (`solver`). The noise of map m is drawn from its own generator, per mask in
pytorch-grad-cam's order (LeRF percentiles, then MoRF percentiles), one (C, k) normal draw for the k imputed
pixels (flat order), so a map's value depends neither on the batch size nor on the other maps.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LayersweepError
from .batching import as_crop_index, image_scores, score_batches
from .registry import choice_option, float_option, list_option, register

# pytorch-grad-cam's `neighbors_weights`: ((d_row, d_col), weight), in its order (the order of the border sums)
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
SOLVERS = ("auto", "direct", "cg")
LERF, MORF = 0, 1  # mask sides, in pytorch-grad-cam's ROADCombined order (LeRF first)


def check_road_options(percentiles, noise, solver) -> tuple[list, float, str]:
    if (not isinstance(percentiles, (list, tuple)) or len(percentiles) == 0
            or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100 for p in percentiles)):
        raise LayersweepError(f"'metrics.options.road.percentiles' is {percentiles!r}; it must be a non-empty list of "
                              f"numbers strictly between 0 and 100.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise LayersweepError(f"'metrics.options.road.noise' is {noise!r}; it must be a number >= 0.")
    if solver not in SOLVERS:
        raise LayersweepError(f"'metrics.options.road.solver' is {solver!r}; use one of {', '.join(SOLVERS)}.")
    return list(percentiles), float(noise), solver


# ----------------------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------------------
def numpy_percentiles(values: torch.Tensor, percentiles) -> torch.Tensor:
    """np.percentile(v, p) of each row of `values` (M, N) float32, method 'linear', for each p (a Python number),
    computed as numpy 2 does for a float32 array and a Python scalar p (so bit-identical): virtual index
    (N - 1) * (p / 100) in float64, then float32 a + (b - a) * g, or b - (b - a) * (1 - g) when g >= 0.5.
    Returns (M, P) float32."""
    v = values.float()
    n = v.shape[1]
    srt = torch.sort(v, dim=1).values
    out = []
    for p in percentiles:
        vi = (n - 1) * (float(p) / 100)
        lo = math.floor(vi)
        if vi >= n - 1:  # numpy takes the maximum
            out.append(srt[:, -1])
            continue
        g = vi - lo
        a, b = srt[:, lo], srt[:, lo + 1]
        diff = b - a
        if g >= 0.5:
            out.append(b - diff * torch.tensor(1 - g, dtype=torch.float32, device=v.device))
        else:
            out.append(a + diff * torch.tensor(g, dtype=torch.float32, device=v.device))
    return torch.stack(out, dim=1)


def road_thresholds(maps01: torch.Tensor, percentiles) -> torch.Tensor:
    """(M, 2, P) float32 thresholds: side LERF t_p(1 - S), side MORF t_p(S) (numpy's percentiles)."""
    s = maps01.float().reshape(len(maps01), -1)
    return torch.stack([numpy_percentiles(1 - s, percentiles), numpy_percentiles(s, percentiles)], dim=1)


def _keep(maps01: torch.Tensor, side: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """Masks of b items: maps01 (b, H, W), side (b,) LERF / MORF, thr (b,) their thresholds."""
    s = maps01.float()
    vals = torch.where((side == LERF).view(-1, 1, 1), 1 - s, s)  # 1 - S in float32, as pytorch-grad-cam
    return vals < thr.view(-1, 1, 1)


def road_keep_masks(maps01: torch.Tensor, percentiles) -> torch.Tensor:
    """(M, 2, P, H, W) bool: True = pixel kept, False = imputed; side LERF keeps (1 - S) < t_p(1 - S), side MORF
    keeps S < t_p(S) (pytorch-grad-cam's `RemoveLeastRelevantFirst` / `RemoveMostRelevantFirst`), in float32."""
    M, H, W = maps01.shape
    P = len(percentiles)
    thr = road_thresholds(maps01, percentiles).reshape(-1)
    item = torch.arange(M * 2 * P, device=maps01.device)
    side = torch.div(item, P, rounding_mode="floor") % 2
    return _keep(maps01[torch.div(item, 2 * P, rounding_mode="floor")], side, thr).view(M, 2, P, H, W)


# ----------------------------------------------------------------------------------------------------------
# the linear systems
# ----------------------------------------------------------------------------------------------------------
def _direct_values(img: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Values (C, k) of the k unknown pixels (flat order) of one image (C, H, W) float64 under one mask (H, W)
    bool: pytorch-grad-cam's system (same matrix, same right-hand side, same border sums), solved by SuperLU."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    C, H, W = img.shape
    flat = unknown.reshape(-1)
    idx = np.flatnonzero(flat)
    k = len(idx)
    if k == 0:
        return np.zeros((C, 0))
    if k == H * W:  # nothing kept: singular system, zero right-hand side; pytorch-grad-cam's spsolve returns 0
        return np.zeros((C, k))
    vidx = np.full(H * W, -1, dtype=np.int64)
    vidx[idx] = np.arange(k)
    r, c = np.divmod(idx, W)
    imgflat = img.reshape(C, -1)
    diag = np.ones(k)
    b = np.zeros((k, C))
    rows, cols, vals = [np.arange(k)], [np.arange(k)], [None]
    for (dr, dc), w in NEIGHBOURS:
        rr, cc = r + dr, c + dc
        valid = (rr >= 0) & (cc >= 0) & (rr < H) & (cc < W)
        diag[~valid] -= w
        ids = np.flatnonzero(valid)
        nb = rr[valid] * W + cc[valid]
        known = ~flat[nb]
        b[ids[known]] -= w * imgflat[:, nb[known]].T
        rows.append(ids[~known])
        cols.append(vidx[nb[~known]])
        vals.append(np.full(int((~known).sum()), w))
    vals[0] = -diag
    A = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    # the matrix is symmetric: a symmetric fill-reducing order is ~1.5x faster than spsolve's COLAMD
    lu = splu(A, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return lu.solve(b).T


def _neighbour_sum(v: torch.Tensor) -> torch.Tensor:
    """sum over the 8 neighbours of w * v[neighbour], zero outside the image; v (..., H, W). The stencil
    [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is (1/12) [1 2 1]^T [1 2 1] minus 4/12 at the centre: separable."""
    H, W = v.shape[-2:]
    p = F.pad(v, (1, 1, 1, 1))
    rows = p[..., :, 0:W] + 2 * p[..., :, 1:W + 1] + p[..., :, 2:W + 2]
    full = rows[..., 0:H, :] + 2 * rows[..., 1:H + 1, :] + rows[..., 2:H + 2, :]
    return full / 12 - v / 3


class _Level:
    """One grid of the multigrid hierarchy: operator A v = (d v - N v) on the unknown pixels (d = the sum of
    the weights of the neighbours inside the image, N = `_neighbour_sum`), zero on the known ones."""

    def __init__(self, unknown: torch.Tensor):
        self.unknown = unknown  # (B, 1, h, w) 0/1
        self.shape = tuple(unknown.shape[-2:])
        self.d = _neighbour_sum(torch.ones((1, 1) + self.shape, dtype=unknown.dtype, device=unknown.device))
        self.inv_d = unknown / self.d

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return (self.d * v - _neighbour_sum(v)) * self.unknown


def _restrict_last(r):  # full weighting along the last dim: coarse i sits at fine 2i
    n = r.shape[-1]
    m = (n + 1) // 2
    rp = F.pad(r, (1, 2 * m - n))  # rp[j] = r[j - 1]
    return rp[..., 1:2 * m:2] + 0.5 * (rp[..., 0:2 * m - 1:2] + rp[..., 2:2 * m + 1:2])


def _prolong_last(e, n):  # linear interpolation along the last dim: the exact adjoint of _restrict_last
    m = e.shape[-1]
    ep = F.pad(e, (1, 1))
    even = 0.5 * (ep[..., :m + 1] + ep[..., 1:])
    odd = F.pad(e, (0, 1))
    return torch.stack([even, odd], dim=-1).flatten(-2)[..., 1:n + 1]


def _restrict(r):
    return _restrict_last(_restrict_last(r).transpose(-1, -2)).transpose(-1, -2)


def _prolong(e, shape):
    return _prolong_last(_prolong_last(e, shape[1]).transpose(-1, -2), shape[0]).transpose(-1, -2)


def _vcycle(levels, i, r, sweeps=2, coarsest_sweeps=20):
    """A symmetric V-cycle (plain Jacobi smoothing, linear interpolation and its adjoint, the same stencil
    on each coarse grid): an SPD approximation of A^-1, the preconditioner of `_cg_solve`."""
    lv = levels[i]
    e = lv.inv_d * r
    if i == len(levels) - 1:
        for _ in range(coarsest_sweeps - 1):
            e = e + lv.inv_d * (r - lv.apply(e))
        return e
    for _ in range(sweeps - 1):
        e = e + lv.inv_d * (r - lv.apply(e))
    rc = _restrict(r - lv.apply(e)) * levels[i + 1].unknown
    e = e + _prolong(_vcycle(levels, i + 1, rc, sweeps, coarsest_sweeps), lv.shape) * lv.unknown
    for _ in range(sweeps):
        e = e + lv.inv_d * (r - lv.apply(e))
    return e


def _cg_solve(images: torch.Tensor, unknown: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """The same systems for a batch (B, C, H, W) with masks (B, H, W) bool, by preconditioned conjugate gradients
    in float64 on the images' device. Returns the images with their unknown pixels replaced (float64)."""
    img = images.double()
    u = unknown[:, None].double()
    levels = [_Level(u)]
    while min(levels[-1].shape) > 4:
        # a coarse pixel is unknown only when its whole 3x3 support is: scattered known pixels pin the solution
        # locally, and a coarse correction there would only slow the fine grid down
        levels.append(_Level(-F.max_pool2d(-levels[-1].unknown, 3, stride=2, padding=1)))
    known = img * (1 - u)
    b = _neighbour_sum(known) * u
    x = torch.zeros_like(img)
    r = b
    z = _vcycle(levels, 0, r)
    p = z
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    done = False
    for _ in range(max_iter):
        if float(r.abs().amax()) <= tol:
            done = True
            break
        Ap = levels[0].apply(p)
        pAp = (p * Ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pAp > 0, rz / torch.where(pAp > 0, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        x = x + alpha * p
        r = r - alpha * Ap
        z = _vcycle(levels, 0, r)
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    if not done and float(r.abs().amax()) > tol:
        warnings.warn(f"ROAD's conjugate-gradient imputation stopped after {max_iter} iterations with a residual of "
                      f"{float(r.abs().amax()):.1e} (tolerance {tol:.0e}).", stacklevel=3)
    return known + x * u


def resolve_solver(solver: str, device) -> str:
    if solver not in SOLVERS:
        raise LayersweepError(f"'metrics.options.road.solver' is {solver!r}; use one of {', '.join(SOLVERS)}.")
    if solver == "auto":
        return "cg" if torch.device(device).type == "cuda" else "direct"
    return solver


def noisy_linear_impute(images: torch.Tensor, keep: torch.Tensor, *, noise: float = 0.01, generators=None,
                        solver: str = "auto", tol: float = 1e-9, max_iter: int = 500) -> torch.Tensor:
    """pytorch-grad-cam's `NoisyLinearImputer` for a batch: images (B, C, H, W) (model inputs), keep (B, H, W)
    bool (False = impute). Every mask's system is solved once (`solver`: 'direct' = SuperLU per mask on the CPU,
    'cg' = all masks together by multigrid-preconditioned CG on the images' device, to a max-norm residual
    `tol`; 'auto' = cg on CUDA, direct otherwise). The solution is rounded to float32 (as pytorch-grad-cam's
    `torch.tensor(..., dtype=torch.float)`), then `noise` * N(0, 1) is added to each imputed value, drawn as one
    (C, k) float32 normal per image from generators[b] (a list of B generators; the same generator object may
    repeat, draws then follow the batch order). noise 0 needs no generator. Returns (B, C, H, W) in images' dtype.
    """
    B, C, H, W = images.shape
    if keep.shape != (B, H, W):
        raise LayersweepError(f"masks of shape {tuple(keep.shape)} do not match images of shape {tuple(images.shape)}.")
    if noise > 0 and (generators is None or len(generators) != B):
        raise LayersweepError(f"ROAD's noise needs one generator per image: got "
                              f"{'none' if generators is None else len(generators)} for {B} images.")
    unknown = ~keep.bool()
    if resolve_solver(solver, images.device) == "cg":
        solved = _cg_solve(images, unknown, tol, max_iter)
        filled = solved.float()
    else:
        img64 = images.detach().double().cpu().numpy()
        unk = unknown.cpu().numpy()
        filled = images.detach().float().clone()
        for i in range(B):
            vals = torch.from_numpy(_direct_values(img64[i], unk[i])).float().to(images.device)
            filled[i][:, unknown[i]] = vals
    if noise > 0:
        for i in range(B):
            k = int(unknown[i].sum())
            g = generators[i]
            eps = torch.randn((C, k), generator=g, dtype=torch.float32, device=g.device).to(images.device)
            filled[i][:, unknown[i]] = filled[i][:, unknown[i]] + noise * eps
    # known pixels are x itself (pytorch-grad-cam clones the input), in the input's dtype
    return torch.where(unknown[:, None], filled.to(images.dtype), images)


# ----------------------------------------------------------------------------------------------------------
# the metric
# ----------------------------------------------------------------------------------------------------------
def road_scores(model, x: torch.Tensor, maps01: torch.Tensor, targets, *, crop_index=None, Y=None,
                percentiles=(20, 40, 60, 80), noise: float = 0.01, generators=None, solver: str = "auto",
                tol: float = 1e-9, batch_size: int = 256, progress=False) -> dict:
    """ROAD MoRF, LeRF and combined of M maps (maps01 (M, H, W) in [0, 1] at the input size; crop_index (M,) = the
    row of x each map explains, or None when M == len(x)).

    Y: (len(x),) softmax scores of x at the targets (computed when None). generators: M generators, map m's
    noise drawn from generators[m] in pytorch-grad-cam's order (all LeRF percentiles, then all MoRF ones), or one
    generator for every map; None only with noise 0. The 2P imputed images of every map share forward batches of
    `batch_size` images; each batch's systems are solved when the batch is built.

    Returns float64 tensors on x's device: 'road_morf', 'road_lerf', 'road_combined' (M,) and 'morf_scores',
    'lerf_scores' (M, P): the imputed images' softmax scores at each percentile.
    """
    percentiles, noise, solver = check_road_options(list(percentiles), noise, solver)
    dev = x.device
    M = len(maps01)
    H, W = x.shape[-2:]
    if tuple(maps01.shape[-2:]) != (H, W):
        raise LayersweepError(f"maps of size {tuple(maps01.shape[-2:])} do not match the inputs' size {(H, W)}; "
                              f"normalise them first.")
    ci = as_crop_index(crop_index, M, len(x), dev)
    t = torch.as_tensor(targets, device=dev).long()
    if isinstance(generators, torch.Generator):
        generators = [generators] * M
    if noise > 0 and (generators is None or len(generators) != M):
        raise LayersweepError(f"ROAD's noise needs one generator per map: got "
                              f"{'none' if generators is None else len(generators)} for {M} maps.")
    if Y is None:
        Y = image_scores(model, x, t, batch_size=batch_size)
    P = len(percentiles)
    maps01 = maps01.to(dev)
    thr = road_thresholds(maps01, percentiles).reshape(-1)  # item = (map, side, percentile), row-major

    def make(i):  # the masks of a batch are built when it is: memory stays at one batch of masks
        m = torch.div(i, 2 * P, rounding_mode="floor")
        side = torch.div(i, P, rounding_mode="floor") % 2
        c = ci[m]
        gens = None if noise == 0 else [generators[j] for j in m.tolist()]
        keep = _keep(maps01[m], side, thr[i])
        return noisy_linear_impute(x[c], keep, noise=noise, generators=gens, solver=solver, tol=tol), t[c]

    s = score_batches(model, M * 2 * P, make, batch_size, dev, progress, "ROAD").double().view(M, 2, P)
    base = Y.to(dev).double()[ci][:, None]
    lerf, morf = s[:, LERF] - base, s[:, MORF] - base
    road_lerf, road_morf = lerf.mean(dim=1), morf.mean(dim=1)
    return {"road_morf": road_morf, "road_lerf": road_lerf, "road_combined": (road_lerf - road_morf) / 2,
            "morf_scores": s[:, MORF], "lerf_scores": s[:, LERF]}


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# Percentiles 20/40/60/80 by default (liuktc/ML4CV_XAI's setting). 2P imputed images per map (P percentiles,
# MoRF and LeRF), each one linear solve and one forward. Rank-based (the masks depend on the order of the map's
# values only): no rescaled variant.
# ----------------------------------------------------------------------------------------------------------
COLUMNS = ("road_morf", "road_lerf", "road_combined")


def _score(ctx) -> dict:
    percentiles, noise, solver = check_road_options(ctx.options["percentiles"], ctx.options["noise"],
                                                    ctx.options["solver"])
    n, L = ctx.n, len(ctx.layers)
    cols = {c: torch.full((L * n,), float("nan"), dtype=torch.float64, device=ctx.device) for c in COLUMNS}
    for maps01, ci, rows in ctx.groups():
        ctx.add_work(2 * len(percentiles) * len(maps01))  # the shared bar counts forwards: 2P imputed images per map
        gens = None
        if noise > 0:  # one generator per (crop, layer): a map's noise depends on nothing else
            layers = [ctx.layers[r // n] for r in rows.tolist()]
            gens = [ctx.crop_generator(c, f"layer {layer}") for c, layer in zip(ci.tolist(), layers)]
        res = road_scores(ctx.model, ctx.x, maps01, ctx.targets, crop_index=ci, Y=ctx.Y, percentiles=percentiles,
                          noise=noise, generators=gens, solver=solver, batch_size=ctx.batch_size,
                          progress=ctx.progress)
        for c in COLUMNS:
            cols[c][rows] = res[c]
    return cols


register(
    "road",
    columns={"road_morf": "lower", "road_lerf": "higher", "road_combined": "higher"},
    needs=("forwards",),
    rescaled=False,
    score=_score,
    options={"percentiles": list_option([20, 40, 60, 80], 1, 99),
             "noise": float_option(0.01, 0.0, 1.0),
             "solver": choice_option("auto", SOLVERS)},
    cost=lambda opts, n_layers: {"forwards_per_map": 2 * len(opts["percentiles"]), "attribution_passes_per_crop": 0},
    reference="Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022; pytorch-grad-cam 1.5.7 ROADCombined",
    definition="softmax score of x with the pixels at or above the map's p-th percentile (MoRF) or at or below "
               "its (100 - p)-th (LeRF) replaced by noisy linear imputation from their 8 neighbours (+ N(0, "
               "noise^2)), minus the score of x, averaged over p in percentiles; road_combined = (LeRF - MoRF) / 2",
)
