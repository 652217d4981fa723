"""ADCC (Poppi et al., CVPR-W 2021): coherency, complexity and their harmonic mean with Average Drop, per map
(definitions and choices in layersweep/metrics/adcc.py). Coherency recomputes the method's map on each map's
explanation image x * S_l and keeps layer l: one attribution pass per (crop, layer) map, each computing every
layer of the shard but using one. Depends on map values: also scored on the rescaled maps.
"""
from __future__ import annotations

import torch

from ..adcc import adcc_scores
from ..registry import int_option, register
from ..scoring import normalize_maps


def _maps_of_x(ctx, rows: torch.Tensor) -> torch.Tensor:
    """The stored maps of these rows (layer-major), upsampled and min-max normalised: coherency's reference
    when the scored maps are rescaled (S**p is not an affine image of the map)."""
    n = ctx.n
    size = tuple(ctx.x.shape[-2:])
    out = torch.empty((len(rows),) + size, device=ctx.device)
    li, ci = torch.div(rows, n, rounding_mode="floor").cpu(), (rows % n).cpu()
    for j in torch.unique(li).tolist():
        sel = torch.nonzero(li == j)[:, 0]
        raw = torch.from_numpy(ctx.raw_maps[ctx.layers[j]][ci[sel].numpy()]).to(ctx.device)
        out[sel.to(ctx.device)] = normalize_maps(raw, size, ctx.constant_eps)[0]
    return out


def _score(ctx) -> dict:
    n, L = ctx.n, len(ctx.layers)
    cols = {c: torch.full((L * n,), float("nan"), dtype=torch.float64, device=ctx.device)
            for c in ("coherency", "complexity", "adcc")}
    layer_of_row = torch.tensor(ctx.layers, device=ctx.device).repeat_interleave(n)
    for maps01, ci, rows in ctx.groups():
        if ctx.progress:  # one forward (O) and one attribution pass (coherency) per map
            ctx.progress.total += 2 * len(maps01)
            ctx.progress.refresh()
        reference = maps01 if ctx.r is None else _maps_of_x(ctx, rows)
        res = adcc_scores(ctx.model, ctx.x, ctx.targets, maps01, ctx.attribute, map_layers=layer_of_row[rows],
                          crop_index=ci, reference=reference, Y=ctx.Y, mask_space=ctx.mask_space,
                          preprocessing=ctx.preprocessing, batch_size=ctx.options["attribution_batch"],
                          forward_batch_size=ctx.batch_size, constant_eps=ctx.constant_eps,
                          crop_ids=ctx.crop_ids, progress=ctx.progress)
        for c in cols:
            cols[c][rows] = res[c]
    return cols


register(
    "adcc",
    columns={"coherency": "higher", "complexity": "lower", "adcc": "higher"},
    needs=("forwards", "attribution"),
    rescaled=True,
    score=_score,
    options={"attribution_batch": int_option(16, 1, 4096)},
    cost=lambda opts, n_layers: {"forwards_per_map": 1, "attribution_passes_per_crop": n_layers},
    reference="Poppi, Cornia, Baraldi & Cucchiara, CVPR-W 2021; aimagelab/ADCC",
    definition="coherency = (Pearson r of the upsampled maps of x and of x * S, same layer and method + 1) / 2; "
               "complexity = ||S||_1 / (H W); adcc = 3 / (1 / coherency + 1 / (1 - complexity) + "
               "1 / (1 - AD)), AD = max(0, Y - O) / Y",
)
