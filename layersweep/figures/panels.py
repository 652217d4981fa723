"""Metric-against-layer panels shared by fig5 and fig6.

Up to FEW_METHODS methods share one panel per metric: colour = layer kind, marker = method, bar = 95% CI.
With more methods one panel per metric would be a thicket, so the figure becomes small multiples: one row
per metric, one column per method family (style.families), y shared along each row; colour = method,
marker = method, and the layer kind is left to the coloured tick labels.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .reference import REF_AD_NOTE, REF_LABEL, SHAPCAM_VOC
from .style import (better_direction, families, kind_colour, kinds_in, layer_axis, method_colours,
                    method_label, method_markers, metric_info, new_figure)

FEW_METHODS = 4


def metric_panel(ax, rows, metric, spec_map, markers, offsets, reference, colours=None, hline=None) -> None:
    """One metric against layer, one marker and one CI bar per (method, layer) of `rows`.

    colours None: points and bars coloured by layer kind; else `colours[method]`.
    """
    title, ylabel, _ = metric_info(metric)
    part = rows[rows["metric"] == metric]

    def colour(method, kinds):
        return [kind_colour(k) for k in kinds] if colours is None else [colours[method]] * len(kinds)

    for method, grp in part.groupby("method", sort=True):
        grp = grp.sort_values("layer")
        x = grp["layer"].to_numpy(float) + offsets[method]
        # A faint line per method guides the eye along the layers; CIs are drawn as plain segments
        # so a CI that does not straddle the mean still shows exactly.
        ax.plot(x, grp["mean"], color="0.75" if colours is None else colours[method], lw=0.8,
                alpha=1.0 if colours is None else 0.5, zorder=1)
        ax.vlines(x, grp["ci_low"], grp["ci_high"], colors=colour(method, grp["kind"]), lw=1.2, zorder=2)
        ax.scatter(x, grp["mean"], c=colour(method, grp["kind"]), marker=markers[method],
                   s=30, edgecolors="black", linewidths=0.4, zorder=3)
    if reference is not None:
        ref = reference[(reference["metric"] == metric) & reference["method"].isin(set(part["method"]))]
        for method, grp in ref.groupby("method", sort=True):
            x = grp["layer"].to_numpy(float) + offsets[method]
            ax.scatter(x, grp["value"], facecolors="none", edgecolors=colour(method, grp["kind"]),
                       marker=markers[method], s=55, linewidths=1.0, zorder=4)
    if metric in SHAPCAM_VOC:
        ax.axhline(SHAPCAM_VOC[metric], color="red", ls=":", lw=1.4, zorder=0)
    if hline is not None:  # a reference level of this metric, e.g. the pointing game's chance
        ax.axhline(hline[0], color="0.3", ls="--", lw=1.2, zorder=0)
    layer_axis(ax, part["layer"], spec_map)
    ax.set_title(f"{title}  ({better_direction(metric)})", fontsize=11)
    ax.set_ylabel(ylabel)


def legend_handles(methods, markers, kinds, metrics, reference, colours=None) -> list:
    if colours is None:
        handles = [Line2D([], [], ls="none", label="layer type:")]
        handles += [Line2D([], [], ls="none", marker="s", ms=8, color=kind_colour(k), label=k) for k in kinds]
    else:
        handles = [Line2D([], [], ls="none", label="x tick colour:")]
        handles += [Line2D([], [], ls="none", marker="s", ms=8, color=kind_colour(k), label=k) for k in kinds]
    handles += [Line2D([], [], ls="none", label="method:")]
    handles += [Line2D([], [], ls="none", marker=markers[m], ms=7, mec="black",
                       mfc="0.6" if colours is None else colours[m], label=method_label(m)) for m in methods]
    handles += [Line2D([], [], ls="none", label="")]
    handles += [Line2D([], [], ls="none", marker="|", ms=14, mew=1.4, color="0.2", label="95% bootstrap CI")]
    if any(m in SHAPCAM_VOC for m in metrics):
        handles += [Line2D([], [], color="red", ls=":", lw=1.4, label="Shap-CAM paper, VOC\n(AD 13.2, IC 32.7)")]
    if reference is not None and len(reference):
        for m in methods:
            if (reference["method"] == m).any():
                handles += [Line2D([], [], ls="none", marker=markers[m], ms=8, mfc="none",
                                   mec="black" if colours is None else colours[m],
                                   label=f"{REF_LABEL}, {method_label(m)}")]
        if "ad" in metrics:  # the report's code summed AD over each batch of 2 images
            handles += [Line2D([], [], ls="none", label=REF_AD_NOTE)]
    return handles


def method_offsets(methods) -> dict[str, float]:
    """Small x offsets so the methods' CIs at one layer do not hide each other."""
    n = len(methods)
    width = 0.36 if n > 1 else 0.0
    return {m: (i - (n - 1) / 2) * (width / max(n - 1, 1)) for i, m in enumerate(sorted(methods))}


def _n_text(rows) -> str:
    n = pd.to_numeric(rows["n"], errors="coerce").dropna()
    if n.empty:
        return ""
    return f" over n = {int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + " crops"


def metric_figure(rows, metrics, reference_rows, spec_map, title, demo, layout, figsize, hlines=None) -> Figure:
    """`layout`/`figsize` are those of the few-methods figure; many methods get one column per family.
    hlines: {metric: (value, legend label)} dashed reference levels (fig8: the pointing game's chance)."""
    hlines = hlines or {}
    methods = sorted(set(rows["method"]))
    markers = method_markers(methods)
    if len(methods) <= FEW_METHODS:
        offsets = method_offsets(methods)
        fig = new_figure(figsize, demo)
        axes = fig.subplots(*layout, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics):
            metric_panel(ax, rows, metric, spec_map, markers, offsets, reference_rows, hline=hlines.get(metric))
            ax.set_xlabel("layer")
        for ax in axes[len(metrics):]:  # a grid larger than the metric list
            ax.set_visible(False)
        handles = legend_handles(methods, markers, kinds_in(rows), metrics, reference_rows)
    else:
        groups = families(methods)
        colours = method_colours(methods)
        fig = new_figure((2.5 + 6.0 * len(groups), 1.2 + 3.6 * len(metrics)), demo)
        axes = fig.subplots(len(metrics), len(groups), squeeze=False, sharey="row")
        for i, metric in enumerate(metrics):
            for j, (family, members) in enumerate(groups.items()):
                ax = axes[i, j]
                part = rows[rows["method"].isin(members)]
                metric_panel(ax, part, metric, spec_map, markers, method_offsets(members), reference_rows,
                             colours, hline=hlines.get(metric))
                ax.set_title(f"{ax.get_title()}\n{family}", fontsize=10)
                ax.set_xlabel("layer" if i == len(metrics) - 1 else "")
                if j:
                    ax.set_ylabel("")
        handles = legend_handles(methods, markers, kinds_in(rows), metrics, reference_rows, colours)
    handles += [Line2D([], [], color="0.3", ls="--", lw=1.2, label=label) for _, label in hlines.values()]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    fig.suptitle(f"{title}\n(points: mean{_n_text(rows)}, constant maps left out; bars: 95% bootstrap CI)",
                 fontsize=11)
    return fig
