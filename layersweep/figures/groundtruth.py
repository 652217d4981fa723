"""The ground-truth study's figures (docs/groundtruth.md): metric x ground-truth agreement heat maps, each
metric along the path from the mask to noise, and ground-truth similarity per layer with example maps.
Every figure states that its data are the synthetic shapes and its model was trained here."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..groundtruth import GT_MEASURES, monotone_share
from .style import method_colours, method_label, method_markers, new_figure, write_outputs

DATA_NOTE = "synthetic shapes data (ground-truth masks), classifier trained on it here"
MEASURE_LABELS = {"gt_cosine": "cosine", "gt_auc": "ROC-AUC", "gt_mass": "mass in mask"}


def _note(fig, study: str, extra: str = "") -> None:
    fig.suptitle(f"{study}: {DATA_NOTE}{extra}", fontsize=8)


def metric_agreement_figure(table: pd.DataFrame, out_pdf, out_png, out_csv, *, study: str,
                            statistic: str = "spearman", dpi: int = 150) -> pd.DataFrame:
    """Heat maps of `agreement` (positive = the metric ranks as the truth does), metric x measure, one panel per
    level (configurations, maps), the value and its CI written in each cell."""
    t = table[(table["statistic"] == statistic) & table["metric"].notna()]
    levels = [lv for lv in ("configurations", "maps") if lv in set(t["level"])]
    metrics = list(dict.fromkeys(t["metric"]))
    measures = [m for m in GT_MEASURES if m in set(t["measure"])]
    fig = new_figure((3.2 + 2.2 * len(measures) * len(levels), 1.2 + 0.42 * len(metrics)), demo=False)
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    for ax, level in zip(axes, levels):
        sub = t[t["level"] == level].set_index(["metric", "measure"])
        grid = np.array([[sub.loc[(m, g), "agreement"] if (m, g) in sub.index else np.nan for g in measures]
                         for m in metrics], dtype=float)
        im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for i, m in enumerate(metrics):
            for j, g in enumerate(measures):
                if (m, g) in sub.index and np.isfinite(grid[i, j]):
                    row = sub.loc[(m, g)]
                    ax.text(j, i, f"{grid[i, j]:+.2f}\n[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]",
                            ha="center", va="center", fontsize=6.5,
                            color="white" if abs(grid[i, j]) > 0.6 else "black")
        ax.set_xticks(range(len(measures)), [MEASURE_LABELS.get(g, g) for g in measures], fontsize=8)
        ax.set_yticks(range(len(metrics)), metrics, fontsize=8)
        n = sub["n_configs"].iloc[0] if level == "configurations" else sub["n_maps"].iloc[0]
        ax.set_title(f"across {level} (n = {n}, {sub['n_samples'].iloc[0]} samples)", fontsize=8)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label=f"{statistic} agreement with the truth")
    _note(fig, study, f"; {statistic} correlation, signed so + = agrees; 95% bootstrap CIs")
    return write_outputs(fig, t, out_pdf, out_png, out_csv, dpi)


def degradation_curves(table: pd.DataFrame) -> pd.DataFrame:
    """metric, column, direction, step, t, mean, n, monotone (share of steps on which the mean gets worse)."""
    g = table.groupby(["metric", "column", "direction", "step", "t"], sort=True)["value"]
    curves = g.agg(["mean", "count"]).reset_index().rename(columns={"count": "n"})
    mono = {key: monotone_share(c["mean"].to_numpy(), key[2])
            for key, c in curves.groupby(["metric", "column", "direction"], sort=False)}
    curves["monotone"] = [mono[(m, c, d)] for m, c, d in zip(curves["metric"], curves["column"],
                                                                curves["direction"])]
    return curves


def metric_degradation_figure(table: pd.DataFrame, out_pdf, out_png, out_csv, *, study: str,
                              dpi: int = 150) -> pd.DataFrame:
    """One panel per metric column: its mean over the samples at each step from the mask (t = 0) to a uniform
    random map (t = 1); a sound metric worsens monotonically (the panel title gives the share of steps on which
    it does)."""
    curves = degradation_curves(table)
    cols = list(dict.fromkeys(zip(curves["metric"], curves["column"])))
    ncol = min(4, len(cols))
    nrow = int(np.ceil(len(cols) / ncol))
    fig = new_figure((3.0 * ncol, 2.3 * nrow + 0.5), demo=False)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False).ravel())
    for ax, (metric, col) in zip(axes, cols):
        c = curves[(curves["metric"] == metric) & (curves["column"] == col)]
        direction = c["direction"].iloc[0]
        ok = c["monotone"].iloc[0]
        flat = not np.nanmax(c["mean"]) - np.nanmin(c["mean"]) > 1e-9  # a metric that does not see the path
        ax.plot(c["t"], c["mean"], marker="o", ms=3, color="tab:green" if ok == 1 and not flat else "tab:red")
        verdict = "flat: blind to the path" if flat else f"never improves on {ok:.0%} of steps"
        ax.set_title(f"{col} ({direction} is better)\n{verdict}", fontsize=8)
        ax.set_xlabel("t: mask (0) -> uniform noise (1)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(cols):]:
        ax.set_visible(False)
    n = int(table["crop_id"].nunique())
    _note(fig, study, f"; mean over {n} correctly classified samples")
    return write_outputs(fig, curves, out_pdf, out_png, out_csv, dpi)


def refinecam_figure(gt: pd.DataFrame, examples: list, out_pdf, out_png, out_csv, *, study: str, layer_names: dict,
                     dpi: int = 150) -> pd.DataFrame:
    """Top: each ground-truth measure against depth (the study's layers, shallow -> deep), one line per method
    (with its CI band); a method with prefixes (RefineCAM) draws its own line beside the single layers. Below:
    example samples, the image, its mask and each method's map at each layer.
    examples: [(crop_id, image (S, S, 3) uint8, mask (S, S), {method: {layer: map01 (S, S)}})]."""
    measures = [m for m in GT_MEASURES if m in set(gt["measure"])]
    methods = list(dict.fromkeys(gt["method"]))
    layers = sorted(gt["layer"].unique())
    colours, markers = method_colours(methods), method_markers(methods)
    n_ex = len(examples)
    ncols = max(len(measures), 2 + len(layers))
    # example rows: the methods mapped at several layers (the sanity maps have one), refinecam first
    multi = [m for m in methods if gt[gt["method"] == m]["layer"].nunique() > 1]
    shown = sorted(multi, key=lambda m: m != "refinecam")[:4]
    rows_ex = n_ex * len(shown)
    fig = new_figure((2.0 * ncols, 2.6 + 1.25 * rows_ex), demo=False)
    gs = fig.add_gridspec(1 + rows_ex, ncols, height_ratios=[2.2] + [1] * rows_ex)
    x = np.arange(len(layers))
    for j, measure in enumerate(measures):
        ax = fig.add_subplot(gs[0, j * ncols // len(measures):(j + 1) * ncols // len(measures)])
        for m in methods:
            c = gt[(gt["method"] == m) & (gt["measure"] == measure)].set_index("layer").reindex(layers)
            ax.plot(x, c["mean"], marker=markers[m], color=colours[m], label=method_label(m))
            ax.fill_between(x, c["ci_low"], c["ci_high"], color=colours[m], alpha=0.15)
        ax.set_xticks(x, [layer_names.get(int(layer), str(layer)) for layer in layers], fontsize=7)
        ax.set_title(MEASURE_LABELS.get(measure, measure), fontsize=9)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=6.5)
    for e, (crop_id, image, mask, maps) in enumerate(examples):
        for k, m in enumerate(shown):
            r = 1 + e * len(shown) + k
            if k == 0:
                ax = fig.add_subplot(gs[r, 0])
                ax.imshow(image)
                ax.set_title(crop_id, fontsize=7)
                ax.axis("off")
                ax = fig.add_subplot(gs[r, 1])
                ax.imshow(mask, cmap="gray")
                ax.set_title("mask", fontsize=7)
                ax.axis("off")
            for li, layer in enumerate(layers):
                ax = fig.add_subplot(gs[r, 2 + li])
                if layer in maps.get(m, {}):
                    ax.imshow(maps[m][layer], cmap="jet", vmin=0, vmax=1)
                ax.set_title(f"{method_label(m)} {layer_names.get(int(layer), layer)}", fontsize=6)
                ax.axis("off")
    _note(fig, study, "; 95% bootstrap CIs over correctly classified test samples")
    return write_outputs(fig, gt, out_pdf, out_png, out_csv, dpi)
