"""Infidelity (Yeh et al., NeurIPS 2019) as captum's `captum.metrics.infidelity` computes it, for every layer's
map of a crop from one set of perturbed forwards.

For a crop x, its target class and K perturbations I_k (Gaussian, N(0, std^2) per model-input value, drawn
from the crop's own generator, so a crop's value does not depend on the batch or its shard mates), with the
perturbed input x - I_k (liuktc/ML4CV_XAI's `perturb_fn`, whose perturbation is I_k itself):

    a_k = sum_{c, h, w} phi[c, h, w] I_k[c, h, w]        phi = the map S (upsampled, min-max normalised, or the
                                                          rescaled S**p) on every colour channel
    b_k = f(x) - f(x - I_k)                               f = the target's logit (`output: logit`, the model as
                                                          captum's forward_func) or softmax probability ('prob')
    infidelity = mean_k (a_k - b_k)^2                     (normalize false)
    infidelity = mean_k (beta a_k - b_k)^2, beta = sum a b / sum a^2   (normalize true: captum's `normalize`,
                                                          the least-squares scale, so a positive factor on the
                                                          map does not change the value; sum a^2 = 0 gives beta =
                                                          sum a b, captum's safe_div)

Lower is better. The forwards f(x - I_k) do not depend on the map: the K + 1 forwards of a crop serve the maps
of every layer (and of the rescaled variant), and only the dot products a_k are computed per map. As phi is the
same on the three channels, a_k = sum_{h, w} S[h, w] (sum_c I_k[c, h, w]).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..errors import LayersweepError
from ..precision import PrecisionModel
from .batching import as_crop_index, progress_bar
from .registry import bool_option, choice_option, float_option, int_option, register

OUTPUTS = ("logit", "prob")


def check_infidelity_options(n_perturb_samples, std, normalize, output) -> tuple[int, float, bool, str]:
    if isinstance(n_perturb_samples, bool) or not isinstance(n_perturb_samples, int) or n_perturb_samples < 1:
        raise LayersweepError(f"'metrics.options.infidelity.n_perturb_samples' is {n_perturb_samples!r}; "
                              f"it must be an integer >= 1.")
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
        raise LayersweepError(f"'metrics.options.infidelity.std' is {std!r}; it must be a number > 0.")
    if not isinstance(normalize, bool):
        raise LayersweepError(f"'metrics.options.infidelity.normalize' is {normalize!r}; it must be true or false.")
    if output not in OUTPUTS:
        raise LayersweepError(f"'metrics.options.infidelity.output' is {output!r}; use one of {', '.join(OUTPUTS)}.")
    return int(n_perturb_samples), float(std), normalize, output


def gaussian_perturbations(x_crop: torch.Tensor, n_samples: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """(n_samples, C, H, W) perturbations N(0, std^2), drawn in float32 on the generator's device in one call,
    returned on x's device and dtype."""
    noise = torch.randn((n_samples,) + tuple(x_crop.shape), generator=generator, dtype=torch.float32,
                        device=generator.device)
    return (noise * std).to(x_crop.device, x_crop.dtype)


def _output_fn(output: str):
    """The target's logit or softmax probability, in at least float32 (reduced-precision forwards widened)."""
    def wide(logits):
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    if output == "logit":
        return lambda logits, t: wide(logits).gather(1, t[:, None])[:, 0]
    return lambda logits, t: torch.softmax(wide(logits), dim=1).gather(1, t[:, None])[:, 0]


def infidelity_forward_diffs(model, x: torch.Tensor, targets, perturbations: Callable[[int], torch.Tensor], *,
                             output: str = "logit", batch_size: int = 256, progress=False) -> torch.Tensor:
    """b[i, k] = f(x_i) - f(x_i - I_ik) for every crop i, float64 (n, K). perturbations(i) -> (K, C, H, W) is
    crop i's perturbations (deterministic: the dot products call it again). The n crops and their n K
    perturbed images share forward batches of `batch_size` images."""
    if output not in OUTPUTS:
        raise LayersweepError(f"'metrics.options.infidelity.output' is {output!r}; use one of {', '.join(OUTPUTS)}.")
    if batch_size < 1:
        raise LayersweepError(f"config key 'metrics.batch_size' must be at least 1, not {batch_size!r}.")
    dev = x.device
    n = len(x)
    t = torch.as_tensor(targets, device=dev).long()
    pick = _output_fn(output)
    first = perturbations(0) if n else None
    K = 0 if first is None else len(first)
    cache = {0: first}

    def noise_of(i):  # crops come in order, so one crop's perturbations are drawn once here
        if i not in cache:
            cache.clear()
            cache[i] = perturbations(i)
        return cache[i]

    # items 0..n-1: the crops; then crop-major, sample-minor perturbed images (captum's repeat_interleave order)
    def make(idx):
        imgs = []
        for j in idx.tolist():
            if j < n:
                imgs.append(x[j])
            else:
                c, k = divmod(j - n, K)
                imgs.append(x[c] - noise_of(c)[k])
        owner = torch.where(idx < n, idx, torch.div(idx - n, K, rounding_mode="floor"))
        return torch.stack(imgs), t[owner]

    total = n * (K + 1)
    out = torch.empty(total, dtype=torch.float64, device=dev)
    bar, own = progress_bar(progress, total, "infidelity")
    try:
        with torch.no_grad():
            for start in range(0, total, batch_size):
                idx = torch.arange(start, min(start + batch_size, total), device=dev)
                imgs, tg = make(idx)
                out[idx] = pick(model(imgs), tg).double()
                bar.update(len(idx))
    finally:
        if own:
            bar.close()
    f_x, f_pert = out[:n], out[n:].view(n, K)
    return f_x[:, None] - f_pert


def infidelity_from_diffs(maps01: torch.Tensor, diffs: torch.Tensor, perturbations: Callable[[int], torch.Tensor], *,
                          crop_index=None, normalize: bool = True) -> torch.Tensor:
    """Infidelity (M,) float64 of M maps (maps01 (M, H, W)) given their crops' forward differences diffs (n, K)
    (`infidelity_forward_diffs`) and the same perturbations(i) -> (K, C, H, W). One draw of each crop's
    perturbations serves all of its maps."""
    dev = diffs.device
    M = len(maps01)
    ci = as_crop_index(crop_index, M, len(diffs), dev)
    K = diffs.shape[1]
    a = torch.empty((M, K), dtype=torch.float64, device=dev)
    flat = maps01.reshape(M, -1).to(dev, torch.float64)
    for c in torch.unique(ci).tolist():
        sel = torch.nonzero(ci == c)[:, 0]
        summed = perturbations(c).to(dev, torch.float64).sum(dim=1).reshape(K, -1)  # (K, H*W): phi is per pixel
        if summed.shape[1] != flat.shape[1]:
            raise LayersweepError(f"maps of {flat.shape[1]} pixels do not match perturbations of "
                                  f"{summed.shape[1]} pixels per channel.")
        a[sel] = flat[sel] @ summed.T
    b = diffs.to(torch.float64)[ci]
    if normalize:
        aa, ab, bb = (a * a).sum(dim=1), (a * b).sum(dim=1), (b * b).sum(dim=1)
        beta = ab / torch.where(aa == 0, torch.ones_like(aa), aa)
        return (beta * beta * aa - 2 * beta * ab + bb) / K
    return ((a - b) ** 2).sum(dim=1) / K


def infidelity_scores(model, x: torch.Tensor, maps01: torch.Tensor, targets, *, perturbations: Callable[[int], torch.Tensor],
                      crop_index=None, normalize: bool = True, output: str = "logit", batch_size: int = 256,
                      diffs: torch.Tensor | None = None, progress=False) -> dict:
    """Infidelity of M maps (maps01 (M, H, W) at the input size; crop_index (M,) rows of x, or None when
    M == len(x)). perturbations(i) -> (K, C, H, W): crop i's perturbations I (deterministic), e.g.
    `gaussian_perturbations(x[i], K, std, a fresh generator of crop i)`. diffs: the crops' forward differences
    when already computed (they do not depend on the maps). Returns {'infidelity': (M,), 'diffs': (n, K)}."""
    if output not in OUTPUTS:
        raise LayersweepError(f"'metrics.options.infidelity.output' is {output!r}; use one of {', '.join(OUTPUTS)}.")
    H, W = x.shape[-2:]
    if tuple(maps01.shape[-2:]) != (H, W):
        raise LayersweepError(f"maps of size {tuple(maps01.shape[-2:])} do not match the inputs' size {(H, W)}; "
                              f"normalise them first.")
    if diffs is None:
        diffs = infidelity_forward_diffs(model, x, targets, perturbations, output=output, batch_size=batch_size,
                                         progress=progress)
    inf = infidelity_from_diffs(maps01, diffs, perturbations, crop_index=crop_index, normalize=normalize)
    return {"infidelity": inf, "diffs": diffs}


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# Gaussian perturbations of the model input drawn from each crop's generator. The K + 1 forwards of a crop serve
# the maps of every layer; only a dot product is computed per map. Depends on the map's values (normalize removes
# only a positive factor, not the rescaling's power S**p): also scored on the rescaled maps.
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    opts = ctx.options
    K, std, normalize, output = check_infidelity_options(opts["n_perturb_samples"], opts["std"], opts["normalize"],
                                                         opts["output"])

    def perturbations(i):  # a fresh generator each call: the forwards and the dot products see the same draws
        return gaussian_perturbations(ctx.x[i], K, std, ctx.crop_generator(i, "perturbation"))

    if isinstance(ctx.model, PrecisionModel):
        warnings.warn(f"infidelity under metrics.precision {ctx.model.dtype}: f(x) - f(x - I) at std {std:g} is of "
                      f"the order of that precision's rounding of the logits; use metrics.precision float32.",
                      stacklevel=2)
    ctx.add_work(ctx.n * (K + 1))  # the shared bar counts forwards: K + 1 per crop, whatever the number of layers
    diffs = infidelity_forward_diffs(ctx.model, ctx.x, ctx.targets, perturbations, output=output,
                                     batch_size=ctx.batch_size, progress=ctx.progress)
    col = torch.full((len(ctx.layers) * ctx.n,), float("nan"), dtype=torch.float64, device=ctx.device)
    for maps01, ci, rows in ctx.groups():
        col[rows] = infidelity_from_diffs(maps01, diffs, perturbations, crop_index=ci, normalize=normalize)
    return {"infidelity": col}


register(
    "infidelity",
    columns={"infidelity": "lower"},
    needs=("forwards",),
    rescaled=True,
    score=_score,
    options={"n_perturb_samples": int_option(10, 1, 10000),
             "std": float_option(0.003, 0.0, 10.0, open_low=True),
             "normalize": bool_option(True),
             "output": choice_option("logit", OUTPUTS)},
    cost=lambda opts, n_layers: {"forwards_per_map": (opts["n_perturb_samples"] + 1) / max(n_layers, 1),
                                 "attribution_passes_per_crop": 0},
    reference="Yeh, Hsieh, Suggala, Inouye & Ravikumar, NeurIPS 2019; captum.metrics.infidelity",
    definition="mean over K perturbations I ~ N(0, std^2) of the model input of (beta sum(S I) - (f(x) - "
               "f(x - I)))^2, S on every colour channel, f = the target's logit (output) and beta the "
               "least-squares scale (normalize; 1 without)",
)
