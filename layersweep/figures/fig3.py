"""Fig. 3: receptive fields of example units of several layers, drawn on one crop."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..errors import LayersweepError
from ..layers import site_index
from .inputs import specs_by_index
from .style import new_figure, write_outputs


def _layer_index(value, spec_map) -> int:
    return site_index(value, sorted(spec_map.values(), key=lambda s: s.index), "figures.fig3_layers")


def fig3(crop, specs, layers, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Receptive fields of the centre unit and the top-left corner unit of several layers, on one crop.

    The map of a layer with `jump` j has crop_size // j units per side (VGG: 'same' convolutions and
    non-overlapping pools); boxes are clipped to the crop, as rf_box does.
    """
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[-1] != 3 or crop.shape[0] != crop.shape[1]:
        raise LayersweepError(f"fig3's crop must be a square (S, S, 3) array, not shape {crop.shape}.")
    spec_map = specs_by_index(specs)
    if not layers:
        raise LayersweepError("fig3 got an empty list of layers.")
    idx = [_layer_index(v, spec_map) for v in layers]
    size = crop.shape[0]
    records = []
    for i in idx:
        s = spec_map[i]
        units = size // s.jump
        if units < 1:
            raise LayersweepError(f"layer {s.name} has no unit on a {size}-pixel crop (jump {s.jump}).")
        for unit in ("centre", "corner"):
            r = c = units // 2 if unit == "centre" else 0
            top, left, bottom, right = s.rf_box(r, c, size)
            records.append(dict(layer=i, name=s.name, unit_row=r, unit_col=c,
                                top=top, left=left, bottom=bottom, right=right, _unit=unit, _units=units))
    table = pd.DataFrame.from_records(records)
    if crop.dtype == np.uint8:
        crop = crop.astype(float) / 255.0

    styles = {"centre": dict(edgecolor="#ffd400", ls="-", lw=2.0), "corner": dict(edgecolor="#00e5ff", ls="--", lw=2.0)}
    fig = new_figure((3.0 * len(idx) + 0.4, 4.3), demo)
    axes = fig.subplots(1, len(idx), squeeze=False)[0]
    for ax, i in zip(axes, idx):
        s = spec_map[i]
        ax.imshow(np.clip(crop, 0, 1), interpolation="nearest")
        part = table[table["layer"] == i]
        for _, row in part.iterrows():
            st = styles[row["_unit"]]
            # Pixel p covers [p - 0.5, p + 0.5] in imshow coordinates.
            ax.add_patch(Rectangle((row["left"] - 0.5, row["top"] - 0.5), row["right"] - row["left"],
                                   row["bottom"] - row["top"], fill=False, **st))
            # Black underlay keeps the outline visible on bright crops.
            ax.add_patch(Rectangle((row["left"] - 0.5, row["top"] - 0.5), row["right"] - row["left"],
                                   row["bottom"] - row["top"], fill=False, edgecolor="black",
                                   lw=st["lw"] + 1.5, zorder=0.9))
        units = int(part["_units"].iloc[0])
        ax.set_title(f"{s.name} ({s.kind})\nRF {s.rf_size}x{s.rf_size} px, {units}x{units} units", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], color=styles["centre"]["edgecolor"], lw=2, label="centre unit"),
               Line2D([], [], color=styles["corner"]["edgecolor"], lw=2, ls="--",
                      label="corner unit (0, 0), clipped to the crop")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    fig.suptitle(f"Fig. 3: receptive fields of example units on a {size}x{size} crop", fontsize=12)
    table = table.drop(columns=["_unit", "_units"])
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)

