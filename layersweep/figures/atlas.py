"""The atlas: for each example crop, the map of every method at every layer, one grid per crop.

Rows = methods, columns = the crop then the layers. Each map is upsampled bilinearly to the crop (the
protocol's upsampling) and drawn over the crop in grey with the diverging colour map of fig2, on its own
symmetric scale (max |value| of that map): the atlas compares where a map puts its mass, not magnitudes.
A method without a layer (a per-method layer list) leaves its cell blank, marked "not computed".
Its CSV has one row per drawn map: its native size and min, max, sum and max |value|.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.transforms import blended_transform_factory

from ..errors import LayersweepError
from .inputs import specs_by_index
from .style import method_label, new_figure, transparent_diverging, upsample, write_outputs

CELL_IN = 1.05  # inches per grid cell
CSV_COLUMNS = ("crop_id", "method", "layer", "name", "map_h", "map_w", "min", "max", "sum", "abs_max")


def _layer_name(layer: int, spec_map) -> str:
    if layer == -1:
        return "input"
    if layer not in spec_map:
        raise LayersweepError(f"the atlas got a map of layer {layer}, which is not one of the {len(spec_map)} "
                              f"layers (0..{max(spec_map)}) nor -1 (the input).")
    return spec_map[layer].name


def _short(name: str) -> str:
    """A cell title: `features.5` -> `f.5`, `encoder.layers.encoder_layer_3.ln_1` -> `enc3.ln_1`."""
    return name.replace("features.", "f.").replace("encoder.layers.encoder_layer_", "enc")


def atlas(crops, crop_ids, maps, out_pdf, out_png, out_csv, *, demo, dpi, specs=None,
          labels=None, gradient_fallback=()) -> pd.DataFrame:
    """crops (N, S, S, 3) uint8 (or float in [0, 1]); crop_ids (N,); maps {method: {layer: (N, h, w)}},
    rows in crop_ids order; labels (N,) optional class names shown beside each crop; gradient_fallback: the
    methods whose shards say `deeplift_rules: gradient_fallback` (their row label says so).

    Methods are drawn in the order of `maps`; layers in index order (-1, the input, first).
    """
    crops = np.asarray(crops)
    crop_ids = [str(c) for c in crop_ids]
    if crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise LayersweepError(f"the atlas' crops must be a non-empty (N, H, W, 3) array, not shape {crops.shape}.")
    n, size = len(crops), crops.shape[1:3]
    if len(crop_ids) != n:
        raise LayersweepError(f"the atlas got {len(crop_ids)} crop ids for {n} crops.")
    if not maps:
        raise LayersweepError("the atlas got no methods to draw.")
    spec_map = specs_by_index(specs)
    methods = list(maps)
    layers = sorted({int(l) for per_layer in maps.values() for l in per_layer})
    if not layers:
        raise LayersweepError("the atlas got no layers to draw.")
    names = {l: _layer_name(l, spec_map) for l in layers}
    arrays = {}
    for method in methods:
        for layer, m in maps[method].items():
            m = np.asarray(m, dtype=float)
            if m.ndim != 3 or len(m) != n:
                raise LayersweepError(f"the atlas' map of method {method!r} at {names[int(layer)]} must be "
                                      f"(N={n}, h, w), not shape {m.shape}.")
            arrays[method, int(layer)] = m
    if crops.dtype == np.uint8:
        crops = crops.astype(float) / 255.0

    records = []
    for i, cid in enumerate(crop_ids):
        for method in methods:
            for layer in layers:
                if (method, layer) in arrays:
                    m = arrays[method, layer][i]
                    records.append(dict(crop_id=cid, method=method, layer=layer, name=names[layer],
                                        map_h=m.shape[0], map_w=m.shape[1], min=np.min(m), max=np.max(m),
                                        sum=np.sum(m), abs_max=np.max(np.abs(m))))
    table = pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))

    # Grid: per crop one title row (thin) then one row per method; columns: crop, then layers.
    n_rows, n_cols = n * (1 + len(methods)), 1 + len(layers)
    heights = [0.3 if r % (1 + len(methods)) == 0 else 1.0 for r in range(n_rows)]
    width, height = 1.6 + CELL_IN * n_cols, 1.0 + CELL_IN * sum(heights)
    fig = new_figure((width, height), demo, layout=None)
    grid = fig.add_gridspec(n_rows, n_cols, height_ratios=heights, left=1.4 / width, right=1 - 0.2 / width,
                            top=1 - 0.75 / height, bottom=0.25 / height, wspace=0.06, hspace=0.08)
    cmap = transparent_diverging()
    for i, cid in enumerate(crop_ids):
        base = i * (1 + len(methods))
        # The crop's name sits in the left margin of its title row; the layer names above its first row.
        head = fig.add_subplot(grid[base, 0])
        head.axis("off")
        label = f"\n{labels[i]}" if labels is not None else ""
        head.text(0.1 / width, 0.0, f"crop {cid}{label}", fontsize=9, fontweight="bold", va="bottom", ha="left",
                  transform=blended_transform_factory(fig.transFigure, head.transAxes))
        gray = crops[i] @ np.array([0.299, 0.587, 0.114])
        for r, method in enumerate(methods):
            ax = fig.add_subplot(grid[base + 1 + r, 0])
            ax.imshow(np.clip(crops[i], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            fallback = "\n(gradient fallback)" if method in gradient_fallback else ""
            ax.set_ylabel(method_label(method) + fallback, fontsize=8, rotation=0, ha="right", va="center")
            for c, layer in enumerate(layers, start=1):
                ax = fig.add_subplot(grid[base + 1 + r, c])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(_short(names[layer]), fontsize=8)
                if (method, layer) not in arrays:
                    ax.text(0.5, 0.5, "not\ncomputed", ha="center", va="center", fontsize=6, color="0.5",
                            transform=ax.transAxes)
                    continue
                ax.set_label(f"{cid}|{method}|{layer}")  # names the cell (tests read the drawn map back)
                m = upsample(arrays[method, layer][i], size)
                lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
                lim = lim if lim > 0 else 1.0  # an all-zero map still gets a valid, centred scale
                ax.imshow(gray, cmap="gray", vmin=0, vmax=1, alpha=0.45, interpolation="nearest")
                ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    fig.suptitle("Atlas: every method's map at every layer (rows: methods; columns: layers). Each map bilinear "
                 "to the crop, its own scale:\nred > 0, blue < 0, transparent near 0 (colour scale centred at 0, "
                 "limit = the map's max |value|)", fontsize=10, y=1 - 0.08 / height, va="top")
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)
