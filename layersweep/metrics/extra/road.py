"""ROAD (Rong et al., ICML 2022) as pytorch-grad-cam's ROADMostRelevantFirst / ROADLeastRelevantFirst /
ROADCombined, softmax target, percentiles 20/40/60/80 (liuktc/ML4CV_XAI's setting); definitions and choices in
layersweep/metrics/road.py. 2P imputed images per map (P percentiles, MoRF and LeRF), each one linear solve and
one forward. Rank-based (the masks depend on the order of the map's values only): no rescaled variant.
"""
from __future__ import annotations

import torch

from ..registry import choice_option, float_option, list_option, register
from ..road import SOLVERS, check_road_options, road_scores

COLUMNS = ("road_morf", "road_lerf", "road_combined")


def _score(ctx) -> dict:
    percentiles, noise, solver = check_road_options(ctx.options["percentiles"], ctx.options["noise"],
                                                    ctx.options["solver"])
    n, L = ctx.n, len(ctx.layers)
    cols = {c: torch.full((L * n,), float("nan"), dtype=torch.float64, device=ctx.device) for c in COLUMNS}
    for maps01, ci, rows in ctx.groups():
        if ctx.progress:  # the shared bar counts forwards: 2P imputed images per map
            ctx.progress.total += 2 * len(percentiles) * len(maps01)
            ctx.progress.refresh()
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
