"""Rescaling of normalised maps to a common total (the report's section 8): S' = S**p with sum(S') = r*H*W.

The report fits alpha = log p by Adam on (sum(S**exp(alpha)) - r*H*W)**2, one map at a time. sum(S**p) is
monotonically decreasing in p, so a bracketing root finder on a = log p solves every map at once instead.
"""
from __future__ import annotations

import math

import torch

from ..errors import LayersweepError

LOG_P_BRACKET = (-20.0, 20.0)  # p in [2e-9, 5e8]: beyond, float32 S**p no longer moves the sum by 1e-4


def check_r(r) -> float:
    try:
        rf = float(r)
    except (TypeError, ValueError):
        raise LayersweepError(f"rescale r = {r!r} is not a number in (0, 1].") from None
    if not 0.0 < rf <= 1.0:
        raise LayersweepError(f"rescale r = {r!r} is outside (0, 1].")
    return rf


def _excess(log_s, a, target, slope=False):
    """sum(S**p) - target at p = exp(a) per map, and optionally its derivative in a: p * sum(S**p * log S).
    Sums in float32: torch's cascade summation keeps them ~1e-6 relative, far inside rtol."""
    p = torch.exp(a).float()[:, None]
    sp = torch.exp(p * log_s)
    f = sp.sum(dim=1).double() - target
    if not slope:
        return f
    return f, (sp * log_s).sum(dim=1).double() * p[:, 0].double()


def _newton(log_s, target, tol, a, done, max_iter):
    """Safeguarded Newton on a = log p for every map at once. Each map keeps a bracket [b0, b1] with
    sum - target > 0 at b0 and < 0 at b1 (the sum decreases in p); a Newton step that leaves it is
    replaced by bisection, so every reachable map converges. Returns (a, done)."""
    b0 = torch.full_like(a, LOG_P_BRACKET[0])
    b1 = torch.full_like(a, LOG_P_BRACKET[1])
    for _ in range(max_iter):
        f, df = _excess(log_s, a, target, slope=True)
        active = ~done
        done = done | (active & (f.abs() <= tol))
        if bool(done.all()):  # one host sync per pass over the maps, not per map
            break
        b0 = torch.where(active & (f > 0), a, b0)   # root above a
        b1 = torch.where(active & (f <= 0), a, b1)  # root below a
        step = a - f / torch.where(df < 0, df, -torch.ones_like(df))
        newton_ok = (df < 0) & (step > b0) & (step < b1)
        a = torch.where(done, a, torch.where(newton_ok, step, 0.5 * (b0 + b1)))
    return a, done


@torch.no_grad()
def rescale_maps(maps01: torch.Tensor, r: float, rtol: float = 1e-4, *, max_iter: int = 100):
    """Rescale maps in [0, 1] (M, H, W) to S' = S**p, p > 0, with sum(S') = r * H * W to relative error `rtol`.

    Solved for all maps at once by safeguarded Newton on a = log p within LOG_P_BRACKET (`_newton`), first
    on a strided subsample of ~4096 pixels per map (cheap passes that land close), then on the full maps
    (usually one or two passes). As p -> 0 the sum tends to count(S > 0), as p -> inf to count(S == 1); a
    target outside that interval is unreachable: p is clamped to the nearer end of the bracket and the map
    flagged. The order of pixels is kept (p > 0), up to float32 ties that S**p may create.

    Returns (rescaled float32 (M, H, W), exponent p float64 (M,), clamped bool (M,)).
    """
    r = check_r(r)
    if not 0 < rtol < 1:
        raise LayersweepError(f"config key 'rescale.rtol' must lie in (0, 1), not {rtol!r}.")
    S = maps01.float()
    M = len(S)
    flat = S.reshape(M, -1)
    n_pix = flat.shape[1]
    target = r * n_pix
    dev = S.device
    if M == 0:
        return S.clone(), torch.zeros(0, dtype=torch.float64, device=dev), torch.zeros(0, dtype=torch.bool, device=dev)
    # log S with a finite floor at S == 0: exp(p * -1e30) is still 0 = 0**p, and 0 * -1e30 keeps the
    # derivative's sum finite where -inf would give NaN
    log_s = torch.log(flat).clamp_(min=-1e30)

    n_one = (flat >= 1).sum(dim=1)
    n_pos = (flat > 0).sum(dim=1)
    too_high = n_pos < target   # even p -> 0 keeps the sum below the target
    too_low = n_one > target    # even p -> inf keeps the sum above it
    clamped = too_high | too_low

    a = torch.zeros(M, dtype=torch.float64, device=dev)  # p = 1: the map as it is
    stride = n_pix // 4096
    if stride >= 4:  # warm start; its own bracket, so a subsample that cannot reach the target is harmless
        sub = log_s[:, ::stride]
        t_sub = r * sub.shape[1]
        skip = clamped | ((sub >= 0).sum(dim=1) > t_sub) | ((sub > -1e30).sum(dim=1) < t_sub)
        a, _ = _newton(sub, t_sub, rtol * t_sub, a, skip, min(max_iter, 30))
    a, done = _newton(log_s, target, rtol * target, a, clamped.clone(), max_iter)
    if not bool(done.all()):
        raise LayersweepError(f"rescaling did not reach rtol={rtol} for {int((~done).sum())} maps within {max_iter} iterations.")
    a = torch.where(too_high, torch.full_like(a, LOG_P_BRACKET[0]),
                    torch.where(too_low, torch.full_like(a, LOG_P_BRACKET[1]), a))
    p = torch.exp(a)
    # the same expression the solver summed, so the returned maps meet the tolerance it checked
    return torch.exp(p.float()[:, None] * log_s).view_as(S), p, clamped


def rescale_maps_adam(map01: torch.Tensor, r: float, rtol: float = 1e-4, *, lr: float = 0.1,
                      max_steps: int = 10_000):
    """The report's way, one map at a time: Adam on alpha (p = exp(alpha)), loss (sum(S**p) - r*H*W)**2,
    stopping at relative error `rtol`. Kept as the benchmark's baseline; returns (rescaled, p, steps)."""
    target = check_r(r) * map01.numel()
    alpha = torch.zeros((), requires_grad=True, device=map01.device)
    opt = torch.optim.Adam([alpha], lr=lr)
    steps = 0
    for steps in range(1, max_steps + 1):
        opt.zero_grad()
        total = (map01 ** torch.exp(alpha)).sum()
        if abs(total.item() - target) <= rtol * target:
            break
        ((total - target) ** 2).backward()
        opt.step()
    p = math.exp(alpha.item())
    return map01 ** p, p, steps
