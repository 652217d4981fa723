"""Infidelity (Yeh et al., NeurIPS 2019) as captum's `infidelity`, with Gaussian perturbations of the model input
seeded per crop; definitions and choices in layersweep/metrics/infidelity.py. The K + 1 forwards of a crop serve
the maps of every layer; only a dot product is computed per map. Depends on the map's values (normalize removes
only a positive factor, not the rescaling's power S**p): also scored on the rescaled maps.
"""
from __future__ import annotations

import warnings

import torch

from ...precision import PrecisionModel
from ..infidelity import (OUTPUTS, check_infidelity_options, gaussian_perturbations, infidelity_forward_diffs,
                          infidelity_from_diffs)
from ..registry import bool_option, choice_option, float_option, int_option, register


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
    if ctx.progress:  # the shared bar counts forwards: K + 1 per crop, whatever the number of layers
        ctx.progress.total += ctx.n * (K + 1)
        ctx.progress.refresh()
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
