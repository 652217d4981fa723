"""ARCC (Domeniconi, Stramiglio, Lombardi & Salti, "How to Evaluate and Refine your CAM", ICPR 2026), as
pytorch-grad-cam 1.5.7's `metrics/arcc.py` computes it: ADCC with ROAD in place of Average Drop.

For S the map (the pipeline's S: upsampled to the input, min-max normalised; S**p for the rescaled variant):
- complexity = mean of S (`adcc.complexity`);
- coherency = (Pearson(S', S) + 1) / 2, S' the same method's map of x * S at the same layer (`adcc.coherency_scores`;
  a mix method such as RefineCAM is recomputed at all its layers: `pipeline.method_on_inputs`);
- ROAD = ROADCombined at `percentiles` (default 20/40/60/80), in [-0.5, 0.5] (`road.road_scores`), rescaled
  to [0, 1] by `road_rescale`: clip2 = clip(2 ROAD, 0, 1) (pytorch-grad-cam's, default) or half = (1 + ROAD) / 2
  (the authors' earlier notebooks);
- arcc = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / rescaled ROAD), 0 where a term is 0. pytorch-grad-cam
  adds 1e-8 to each term's denominator instead (a difference of ~1e-8 where no term is 0).

Columns: arcc (higher is better) and arcc_road, the rescaled ROAD term (higher is better; the other two terms
are ADCC's coherency and complexity columns).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import LayersweepError
from ..preprocess import TORCHVISION, Preprocessing
from .adcc import reference_maps_of_x, complexity, coherency_scores
from .batching import as_crop_index
from .registry import choice_option, float_option, int_option, list_option, register
from .road import SOLVERS, check_road_options, road_scores

ROAD_RESCALES = ("clip2", "half")


def rescale_road(road_combined: torch.Tensor, how: str = "clip2") -> torch.Tensor:
    """ROADCombined (in [-0.5, 0.5]) to [0, 1]: clip2 = clip(2 ROAD, 0, 1), half = (1 + ROAD) / 2."""
    if how == "clip2":
        return (2 * road_combined).clamp(0, 1)
    if how == "half":
        return (1 + road_combined) / 2
    raise LayersweepError(f"'metrics.options.arcc.road_rescale' is {how!r}; use one of {', '.join(ROAD_RESCALES)}.")


def arcc_combine(coherency: torch.Tensor, complexity: torch.Tensor, road01: torch.Tensor) -> torch.Tensor:
    """3 / (1 / coherency + 1 / (1 - complexity) + 1 / road01): 0 where a term is <= 0, NaN where one is NaN."""
    terms = torch.stack([coherency.double(), 1 - complexity.double(), road01.double()])
    zero = (terms <= 0).any(dim=0)
    hm = 3 / (1 / terms.clamp_min(1e-300)).sum(dim=0)
    return torch.where(zero, torch.zeros_like(hm), hm)


def arcc_scores(model, x: torch.Tensor, targets, maps01: torch.Tensor, attribute: Callable, *, map_layers,
                crop_index=None, reference: torch.Tensor | None = None, Y: torch.Tensor | None = None,
                percentiles=(20, 40, 60, 80), noise: float = 0.01, generators=None, solver: str = "auto",
                road_rescale: str = "clip2", mask_space: str = "normalized",
                preprocessing: Preprocessing = TORCHVISION, batch_size: int = 32, forward_batch_size: int = 256,
                constant_eps: float = 1e-6, crop_ids=None, progress=False) -> dict:
    """Coherency, complexity, ROAD (combined, and rescaled) and ARCC of M maps (M, H, W) in [0, 1].

    Arguments as `adcc.coherency_scores` (attribute, map_layers, crop_index, reference, mask_space, batch_size)
    and `road.road_scores` (Y: the crops' softmax scores, percentiles, noise, generators: one per map, solver).
    Returns {name: float64 (M,)} on x's device: coherency, complexity, road_combined, arcc_road, arcc.
    """
    rescale_road(torch.zeros(1), road_rescale)  # checks the option before any work
    dev = x.device
    ci = as_crop_index(crop_index, len(maps01), len(x), dev)
    road = road_scores(model, x, maps01, targets, crop_index=ci, Y=Y, percentiles=percentiles, noise=noise,
                       generators=generators, solver=solver, batch_size=forward_batch_size,
                       progress=progress)["road_combined"]
    coh = coherency_scores(x, targets, maps01, attribute, map_layers=map_layers, crop_index=ci,
                           reference=reference, mask_space=mask_space, preprocessing=preprocessing,
                           batch_size=batch_size, constant_eps=constant_eps, crop_ids=crop_ids, progress=progress)
    com = complexity(maps01).to(dev)
    road01 = rescale_road(road, road_rescale)
    return {"coherency": coh, "complexity": com, "road_combined": road, "arcc_road": road01,
            "arcc": arcc_combine(coh, com, road01)}


# ----------------------------------------------------------------------------------------------------------
# the registered metric
# Per map: 2P ROAD forwards (each a linear solve) and one attribution pass for coherency. Complexity and
# coherency depend on the map's values: arcc is also scored on the rescaled maps (with the map of x as coherency's
# reference, as ADCC); ROAD's masks depend on the order of the values only, so arcc_road is not rescaled.
# ROAD's noise: one generator per (crop, layer), seeded from (seed, crop, 'arcc', layer).
# ----------------------------------------------------------------------------------------------------------
def _score(ctx) -> dict:
    percentiles, noise, solver = check_road_options(ctx.options["percentiles"], ctx.options["noise"],
                                                    ctx.options["solver"])
    n, L = ctx.n, len(ctx.layers)
    cols = ("arcc",) if ctx.r is not None else ("arcc", "arcc_road")
    out = {c: torch.full((L * n,), float("nan"), dtype=torch.float64, device=ctx.device) for c in cols}
    layer_of_row = torch.tensor(ctx.layers, device=ctx.device).repeat_interleave(n)
    for maps01, ci, rows in ctx.groups():
        ctx.add_work((2 * len(percentiles) + 1) * len(maps01))
        gens = None
        if noise > 0:
            gens = [ctx.crop_generator(c, f"layer {ctx.layers[r // n]}") for c, r in zip(ci.tolist(), rows.tolist())]
        reference = maps01 if ctx.r is None else reference_maps_of_x(ctx, rows)
        res = arcc_scores(ctx.model, ctx.x, ctx.targets, maps01, ctx.attribute, map_layers=layer_of_row[rows],
                          crop_index=ci, reference=reference, Y=ctx.Y, percentiles=percentiles, noise=noise,
                          generators=gens, solver=solver, road_rescale=ctx.options["road_rescale"],
                          mask_space=ctx.mask_space, preprocessing=ctx.preprocessing,
                          batch_size=ctx.options["attribution_batch"], forward_batch_size=ctx.batch_size,
                          constant_eps=ctx.constant_eps, crop_ids=ctx.crop_ids, progress=ctx.progress)
        for c in cols:
            out[c][rows] = res[c]
    return out


register(
    "arcc",
    columns={"arcc": "higher", "arcc_road": "higher"},
    needs=("forwards", "attribution"),
    rescaled=("arcc",),
    score=_score,
    options={"percentiles": list_option([20, 40, 60, 80], 1, 99),
             "noise": float_option(0.01, 0.0, 1.0),
             "solver": choice_option("auto", SOLVERS),
             "road_rescale": choice_option("clip2", ROAD_RESCALES),
             "attribution_batch": int_option(16, 1, 4096)},
    cost=lambda opts, n_layers: {"forwards_per_map": 2 * len(opts["percentiles"]),
                                 "attribution_passes_per_crop": n_layers},
    reference="Domeniconi, Stramiglio, Lombardi & Salti, ICPR 2026 (arXiv 2605.14641); pytorch-grad-cam 1.5.7 ARCC",
    definition="arcc = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / R), R = clip(2 ROADCombined, 0, 1) "
               "(road_rescale clip2) or (1 + ROADCombined) / 2 (half), ROAD at percentiles 20/40/60/80; coherency "
               "and complexity as ADCC's",
)
