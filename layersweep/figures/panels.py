"""Metric-against-layer panels shared by fig5 and fig6: colour = layer kind, marker = method, bar = 95% CI."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .reference import REF_AD_NOTE, REF_LABEL, SHAPCAM_VOC
from .style import (METRICS, better_direction, kind_colour, kinds_in, layer_axis, method_label, method_markers,
                    new_figure)


def metric_panel(ax, rows, metric, spec_map, markers, offsets, reference) -> None:
    """One metric against layer: colour = layer kind, marker = method, vertical bar = 95% CI."""
    title, ylabel, _ = METRICS[metric]
    part = rows[rows["metric"] == metric]
    for method, grp in part.groupby("method", sort=True):
        grp = grp.sort_values("layer")
        x = grp["layer"].to_numpy(float) + offsets[method]
        # A faint line per method guides the eye along the layers; CIs are drawn as plain segments
        # so a CI that does not straddle the mean still shows exactly.
        ax.plot(x, grp["mean"], color="0.75", lw=0.8, zorder=1)
        ax.vlines(x, grp["ci_low"], grp["ci_high"], colors=[kind_colour(k) for k in grp["kind"]],
                  lw=1.2, zorder=2)
        ax.scatter(x, grp["mean"], c=[kind_colour(k) for k in grp["kind"]], marker=markers[method],
                   s=30, edgecolors="black", linewidths=0.4, zorder=3)
    if reference is not None:
        ref = reference[reference["metric"] == metric]
        for method, grp in ref.groupby("method", sort=True):
            x = grp["layer"].to_numpy(float) + offsets[method]
            ax.scatter(x, grp["value"], facecolors="none", edgecolors=[kind_colour(k) for k in grp["kind"]],
                       marker=markers[method], s=55, linewidths=1.0, zorder=4)
    if metric in SHAPCAM_VOC:
        ax.axhline(SHAPCAM_VOC[metric], color="red", ls=":", lw=1.4, zorder=0)
    layer_axis(ax, part["layer"], spec_map)
    ax.set_title(f"{title}  ({better_direction(metric)})", fontsize=11)
    ax.set_ylabel(ylabel)


def legend_handles(methods, markers, kinds, metrics, reference) -> list:
    handles = [Line2D([], [], ls="none", label="layer type:")]
    handles += [Line2D([], [], ls="none", marker="s", ms=8, color=kind_colour(k), label=k) for k in kinds]
    handles += [Line2D([], [], ls="none", label="method:")]
    handles += [Line2D([], [], ls="none", marker=markers[m], ms=7, mfc="0.6", mec="black",
                       label=method_label(m)) for m in methods]
    handles += [Line2D([], [], ls="none", label="")]
    handles += [Line2D([], [], ls="none", marker="|", ms=14, mew=1.4, color="0.2", label="95% bootstrap CI")]
    if any(m in SHAPCAM_VOC for m in metrics):
        handles += [Line2D([], [], color="red", ls=":", lw=1.4, label="Shap-CAM paper, VOC\n(AD 13.2, IC 32.7)")]
    if reference is not None and len(reference):
        for m in methods:
            if (reference["method"] == m).any():
                handles += [Line2D([], [], ls="none", marker=markers[m], ms=8, mfc="none", mec="black",
                                   label=f"{REF_LABEL}, {method_label(m)}")]
        if "ad" in metrics:  # the report's code summed AD over each batch of 2 images
            handles += [Line2D([], [], ls="none", label=REF_AD_NOTE)]
    return handles


def method_offsets(methods) -> dict[str, float]:
    """Small x offsets so the methods' CIs at one layer do not hide each other."""
    n = len(methods)
    width = 0.36 if n > 1 else 0.0
    return {m: (i - (n - 1) / 2) * (width / max(n - 1, 1)) for i, m in enumerate(sorted(methods))}



def metric_figure(rows, metrics, reference_rows, spec_map, title, demo, layout, figsize) -> Figure:
    methods = sorted(set(rows["method"]))
    markers, offsets = method_markers(methods), method_offsets(methods)
    fig = new_figure(figsize, demo)
    axes = fig.subplots(*layout, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        metric_panel(ax, rows, metric, spec_map, markers, offsets, reference_rows)
        ax.set_xlabel("layer")
    handles = legend_handles(methods, markers, kinds_in(rows), metrics, reference_rows)
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    n = pd.to_numeric(rows["n"], errors="coerce").dropna()
    n_text = "" if n.empty else f" over n = {int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + " crops"
    fig.suptitle(f"{title}\n(points: mean{n_text}, constant maps left out; bars: 95% bootstrap CI)", fontsize=11)
    return fig

