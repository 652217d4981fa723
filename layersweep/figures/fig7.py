"""Fig. 7: paired difference of two methods per layer for AD and IC, without and with rescaling."""
from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from ..errors import LayersweepError
from .inputs import (PAIRED_COLUMNS, RESCALED_METRICS, add_layer_info, check_layers, check_r, describe_r,
                     match_r, require_columns, specs_by_index)
from .style import METRICS, better_direction, kind_colour, kinds_in, layer_axis, method_label, new_figure, write_outputs


def _select_paired(paired, r, method_a, method_b, spec_map) -> pd.DataFrame:
    """method_a minus method_b per (metric, layer, rescaled); rows stored the other way round are negated."""
    require_columns(paired, PAIRED_COLUMNS, "paired-difference table")
    unknown = sorted(set(paired["metric"]) - set(RESCALED_METRICS))
    if unknown:
        raise LayersweepError(f"the paired-difference table has the unknown metric {unknown[0]!r}; "
                              f"expected one of {', '.join(RESCALED_METRICS)}.")
    fwd = (paired["method_a"] == method_a) & (paired["method_b"] == method_b)
    rev = (paired["method_a"] == method_b) & (paired["method_b"] == method_a)
    parts = []
    for rescaled, rr in ((False, None), (True, r)):
        sel = match_r(paired["rescale_r"], rr)
        a = paired[fwd & sel]
        b = paired[rev & sel]
        b = b.assign(mean=-b["mean"], ci_low=-b["ci_high"], ci_high=-b["ci_low"])  # a - b = -(b - a)
        both = pd.concat([a, b], ignore_index=True)
        both = both.assign(rescaled=rescaled)
        parts.append(both)
    rows = pd.concat(parts, ignore_index=True)
    rows["layer"] = rows["layer"].astype(int)
    pair = f"{method_a} minus {method_b}"
    for metric in RESCALED_METRICS:
        for rescaled, rr in ((False, None), (True, r)):
            if not ((rows["metric"] == metric) & (rows["rescaled"] == rescaled)).any():
                raise LayersweepError(f"the paired-difference table has no rows of {pair} for metric "
                                      f"{metric!r} with {describe_r(rr)}.")
    check_layers(rows["layer"], spec_map, "paired-difference table")
    dup = rows.duplicated(["metric", "layer", "rescaled"], keep=False)
    if dup.any():
        k, l, s = rows.loc[dup, ["metric", "layer", "rescaled"]].iloc[0]
        raise LayersweepError(f"the paired-difference table has more than one row of {pair} for metric {k!r}, "
                              f"layer {l}, {describe_r(r if s else None)}.")
    for metric in RESCALED_METRICS:
        part = rows[rows["metric"] == metric]
        plain, resc = (set(part.loc[part["rescaled"] == s, "layer"]) for s in (False, True))
        if plain ^ resc:
            l = sorted(plain ^ resc)[0]
            missing = describe_r(r) if l in plain else describe_r(None)
            raise LayersweepError(f"the paired-difference table has no row of {pair} for metric {metric!r}, "
                                  f"layer {l}, with {missing}.")
    return rows


def fig7(paired, r, out_pdf, out_png, out_csv, *, demo, dpi, method_a="gradcampp", method_b="deepliftshap",
         specs=None) -> pd.DataFrame:
    """method_a minus method_b (default Grad-CAM++ minus DeepLiftShap) per layer for AD and IC,
    without and with rescaling, with the paired-bootstrap CIs and a zero line.

    The paired table's `mean` is read as method_a - method_b of its row.
    """
    r = check_r(r)
    spec_map = specs_by_index(specs)
    rows = add_layer_info(_select_paired(paired, r, method_a, method_b, spec_map), spec_map)
    la, lb = method_label(method_a), method_label(method_b)
    # Neutral series colours: blue/orange/green already mean layer types (the tick labels).
    series = {False: dict(color="0.3", marker="o", dx=-0.14, label="plain maps"),
              True: dict(color="#9467bd", marker="s", dx=0.14, label=f"rescaled, r = {r:g}")}
    fig = new_figure((12.0, 8.5), demo)
    axes = fig.subplots(2, 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, RESCALED_METRICS):
        part = rows[rows["metric"] == metric]
        ax.axhline(0.0, color="black", lw=0.9, zorder=1)
        for rescaled, st in series.items():
            grp = part[part["rescaled"] == rescaled].sort_values("layer")
            x = grp["layer"].to_numpy(float) + st["dx"]
            ax.vlines(x, grp["ci_low"], grp["ci_high"], colors=st["color"], lw=1.3, zorder=2)
            ax.plot(x, grp["mean"], ls="none", marker=st["marker"], ms=5.5, color=st["color"],
                    mec="black", mew=0.4, zorder=3, label=st["label"])
        layer_axis(ax, part["layer"], spec_map)
        title, _, _ = METRICS[metric]
        ax.set_title(f"{title}: {la} \u2212 {lb}  ({metric.upper()} {better_direction(metric)})", fontsize=11)
        ax.set_ylabel(f"\u0394 {metric.upper()} (percentage points)")
        ax.set_xlabel("layer (tick colour = layer type)")
    handles = [Line2D([], [], ls="none", marker=st["marker"], ms=6, color=st["color"], mec="black",
                      label=st["label"]) for st in series.values()]
    handles += [Line2D([], [], ls="none", marker="|", ms=14, mew=1.4, color="0.3", label="95% paired\nbootstrap CI"),
                Line2D([], [], color="black", lw=0.9, label="no difference")]
    handles += [Line2D([], [], ls="none", label=""), Line2D([], [], ls="none", label="x tick colour:")]
    handles += [Line2D([], [], ls="none", marker="s", ms=8, color=kind_colour(k), label=k) for k in kinds_in(rows)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    fig.suptitle(f"Fig. 7: difference between {la} and {lb}, per layer, without and with rescaling", fontsize=12)
    cols = ["metric", "layer", "name", "rescaled", "mean", "ci_low", "ci_high", "n"]
    table = rows[cols].sort_values(["metric", "rescaled", "layer"]).reset_index(drop=True)
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)
