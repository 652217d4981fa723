"""The report's figures 2-7, each written as PDF + PNG + the CSV of exactly the numbers it plots.

Every figure function validates its input first (a LayersweepError names what is missing, and nothing is
written), then draws on a pyplot-free `Figure` with the Agg canvas (no global state, safe in Snakemake jobs),
then writes the three files atomically and returns the DataFrame that went into the CSV.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .errors import LayersweepError
from .io import atomic_path
from .layers import LayerSpec, layer_specs, parse_layers

log = logging.getLogger(__name__)

DEMO_STAMP = "SYNTHETIC DEMO DATA - RANDOMLY INITIALISED WEIGHTS - not the study's results"

METHOD_LABELS = {"deepliftshap": "DeepLiftShap", "gradcampp": "Grad-CAM++"}
METHOD_MARKERS = {"deepliftshap": "o", "gradcampp": "^"}
_SPARE_MARKERS = ("s", "D", "v", "P", "X", "<", ">", "h", "*")
KIND_COLOURS = {"Conv2d": "#1f77b4", "ReLU": "#ff7f0e", "MaxPool2d": "#2ca02c"}
_OTHER_KIND_COLOUR = "#7f7f7f"

# metric -> (panel title, y label, higher is better)
METRICS = {
    "ad": ("Average Drop", "AD (%)", False),
    "ic": ("Increase in Confidence", "IC (%)", True),
    "insertion_auc": ("Insertion AUC", "insertion AUC", True),
    "deletion_auc": ("Deletion AUC", "deletion AUC", False),
}
FIG5_METRICS = ("ad", "ic", "insertion_auc", "deletion_auc")
RESCALED_METRICS = ("ad", "ic")
SHAPCAM_VOC = {"ad": 13.2, "ic": 32.7}  # Shap-CAM paper, Table 2 (VOC), layer unspecified

# The reference JSON (report-results.json): its keys -> ours.
REFERENCE_R = 0.3  # the r behind its "VGG11_Rescaling" numbers
_REF_MODELS = {"VGG11": False, "VGG11_Rescaling": True}
_REF_METHODS = {"_DeepLiftShap": "deepliftshap", "_GradCAMPlusPlus": "gradcampp"}
_REF_METRICS = {"avg_drop": "ad", "increase": "ic",
                "insertion_curve_AUC": "insertion_auc", "deletion_curve_AUC": "deletion_auc"}
_REF_LABEL = "report (code)"
_REF_AD_NOTE = "report (code) AD: sum over\n2-image batches, averaged,\nabout 2x the defined AD"

SUMMARY_COLUMNS = ("method", "layer", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
                   "n_constant", "n_clamped")
PAIRED_COLUMNS = ("metric", "layer", "rescale_r", "method_a", "method_b", "mean", "ci_low", "ci_high", "n")


# ----------------------------------------------------------------------------------------------- helpers

def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _method_markers(methods) -> dict[str, str]:
    """Known methods keep their marker; any other method gets the next spare one (stable by name)."""
    spare = iter(_SPARE_MARKERS * 4)
    return {m: METHOD_MARKERS[m] if m in METHOD_MARKERS else next(spare) for m in sorted(methods)}


def _kind_colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, _OTHER_KIND_COLOUR)


@functools.lru_cache(maxsize=1)
def vgg11_specs() -> tuple[LayerSpec, ...]:
    """Layer metadata of torchvision VGG11's `features` (built without the 120M-parameter classifier)."""
    from torchvision.models.vgg import cfgs, make_layers
    return tuple(layer_specs(make_layers(cfgs["A"], batch_norm=False)))


def _spec_map(specs) -> dict[int, LayerSpec]:
    return {s.index: s for s in (vgg11_specs() if specs is None else specs)}


def _describe_r(r) -> str:
    return "plain maps (rescale_r NaN)" if r is None else f"rescale_r = {r:g}"


def _check_r(r) -> float:
    try:
        r = float(r)
    except (TypeError, ValueError):
        raise LayersweepError(f"the rescale factor r must be a number in (0, 1], not {r!r}.") from None
    if not 0 < r <= 1:
        raise LayersweepError(f"the rescale factor r must be in (0, 1], not {r!r}.")
    return r


def _match_r(col: pd.Series, r) -> pd.Series:
    """Rows of plain maps (r None) or of rescale factor r (tolerant to a float32 round trip)."""
    vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    if r is None:
        return pd.Series(np.isnan(vals), index=col.index)
    return pd.Series(np.isclose(vals, r, rtol=1e-6, atol=1e-9), index=col.index)


def _require_columns(df, columns, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise LayersweepError(f"the {what} must be a pandas DataFrame, not {type(df).__name__}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LayersweepError(f"the {what} lacks the column(s) {', '.join(missing)}.")


def _check_layers(layers, spec_map, what: str) -> None:
    unknown = sorted(set(int(v) for v in layers) - set(spec_map))
    if unknown:
        raise LayersweepError(f"the {what} names layer {unknown[0]}, which is not one of the "
                              f"{len(spec_map)} layers (0..{max(spec_map)}).")


def _select_summary(summary, metrics, r, spec_map) -> pd.DataFrame:
    """The summary rows one figure plots; every (method, layer) must have every metric, once."""
    _require_columns(summary, SUMMARY_COLUMNS, "summary table")
    unknown = sorted(set(summary["metric"]) - set(METRICS))
    if unknown:
        raise LayersweepError(f"the summary table has the unknown metric {unknown[0]!r}; "
                              f"expected one of {', '.join(METRICS)}.")
    rows = summary[summary["metric"].isin(metrics) & _match_r(summary["rescale_r"], r)].copy()
    for metric in metrics:
        if not (rows["metric"] == metric).any():
            raise LayersweepError(f"the summary table has no rows for metric {metric!r} with {_describe_r(r)}.")
    rows["layer"] = rows["layer"].astype(int)
    _check_layers(rows["layer"], spec_map, "summary table")
    dup = rows.duplicated(["method", "layer", "metric"], keep=False)
    if dup.any():
        m, l, k = rows.loc[dup, ["method", "layer", "metric"]].iloc[0]
        raise LayersweepError(f"the summary table has more than one row for method {m!r}, layer {l}, "
                              f"metric {k!r} with {_describe_r(r)}.")
    pairs = set(map(tuple, rows[["method", "layer"]].drop_duplicates().to_numpy()))
    for metric in metrics:
        have = set(map(tuple, rows.loc[rows["metric"] == metric, ["method", "layer"]].to_numpy()))
        if pairs - have:
            m, l = sorted(pairs - have)[0]
            raise LayersweepError(f"the summary table has no row for method {m!r}, layer {l}, "
                                  f"metric {metric!r} with {_describe_r(r)}.")
    return rows


def _add_layer_info(df: pd.DataFrame, spec_map) -> pd.DataFrame:
    df = df.copy()
    df["name"] = [spec_map[int(l)].name for l in df["layer"]]
    df["kind"] = [spec_map[int(l)].kind for l in df["layer"]]
    return df


def _demo_stamp(fig: Figure) -> None:
    """A red diagonal across the whole figure, sized to fit its diagonal, drawn above everything."""
    w, h = fig.get_size_inches()
    angle = math.degrees(math.atan2(h, w))
    diag_pt = math.hypot(w, h) * 72
    size = max(7.0, min(36.0, 0.78 * diag_pt / (0.68 * len(DEMO_STAMP))))  # bold glyphs ~0.68 em wide
    # A translucent white box keeps the stamp legible over busy images without hiding the data.
    fig.text(0.5, 0.5, DEMO_STAMP, rotation=angle, rotation_mode="anchor", ha="center", va="center",
             fontsize=size, fontweight="bold", color="red", alpha=0.8, zorder=1000,
             transform=fig.transFigure,
             bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="red", alpha=0.55))


def _new_figure(figsize, demo: bool) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    if demo:
        _demo_stamp(fig)
    return fig


def _write(fig: Figure, df: pd.DataFrame, out_pdf, out_png, out_csv, dpi) -> pd.DataFrame:
    """All three files appear together or not at all (renames happen only after every write succeeded)."""
    dpi = int(dpi)
    with contextlib.ExitStack() as stack:
        tmp_pdf = stack.enter_context(atomic_path(out_pdf))
        tmp_png = stack.enter_context(atomic_path(out_png))
        tmp_csv = stack.enter_context(atomic_path(out_csv))
        # The temp names end in '.part': matplotlib must be told the format.
        fig.savefig(tmp_pdf, format="pdf", dpi=dpi, metadata={"CreationDate": None})
        fig.savefig(tmp_png, format="png", dpi=dpi)
        df.to_csv(tmp_csv, index=False)
    return df


def _layer_axis(ax, layers, spec_map) -> None:
    """x = layer index, ticks = layer names coloured by layer kind."""
    layers = sorted(set(int(l) for l in layers))
    ax.set_xticks(layers)
    ax.set_xticklabels([spec_map[l].name for l in layers], rotation=90, fontsize=8)
    for tick, l in zip(ax.get_xticklabels(), layers):
        tick.set_color(_kind_colour(spec_map[l].kind))
    ax.set_xlim(min(layers) - 0.7, max(layers) + 0.7)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _better(metric: str) -> str:
    return "higher is better \u2191" if METRICS[metric][2] else "lower is better \u2193"


def _metric_panel(ax, rows, metric, spec_map, markers, offsets, reference) -> None:
    """One metric against layer: colour = layer kind, marker = method, vertical bar = 95% CI."""
    title, ylabel, _ = METRICS[metric]
    part = rows[rows["metric"] == metric]
    for method, grp in part.groupby("method", sort=True):
        grp = grp.sort_values("layer")
        x = grp["layer"].to_numpy(float) + offsets[method]
        # A faint line per method guides the eye along the layers; CIs are drawn as plain segments
        # so a CI that does not straddle the mean still shows exactly.
        ax.plot(x, grp["mean"], color="0.75", lw=0.8, zorder=1)
        ax.vlines(x, grp["ci_low"], grp["ci_high"], colors=[_kind_colour(k) for k in grp["kind"]],
                  lw=1.2, zorder=2)
        ax.scatter(x, grp["mean"], c=[_kind_colour(k) for k in grp["kind"]], marker=markers[method],
                   s=30, edgecolors="black", linewidths=0.4, zorder=3)
    if reference is not None:
        ref = reference[reference["metric"] == metric]
        for method, grp in ref.groupby("method", sort=True):
            x = grp["layer"].to_numpy(float) + offsets[method]
            ax.scatter(x, grp["value"], facecolors="none", edgecolors=[_kind_colour(k) for k in grp["kind"]],
                       marker=markers[method], s=55, linewidths=1.0, zorder=4)
    if metric in SHAPCAM_VOC:
        ax.axhline(SHAPCAM_VOC[metric], color="red", ls=":", lw=1.4, zorder=0)
    _layer_axis(ax, part["layer"], spec_map)
    ax.set_title(f"{title}  ({_better(metric)})", fontsize=11)
    ax.set_ylabel(ylabel)


def _legend_handles(methods, markers, kinds, metrics, reference) -> list:
    handles = [Line2D([], [], ls="none", label="layer type:")]
    handles += [Line2D([], [], ls="none", marker="s", ms=8, color=_kind_colour(k), label=k) for k in kinds]
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
                                   label=f"{_REF_LABEL}, {method_label(m)}")]
        if "ad" in metrics:  # the report's code summed AD over each batch of 2 images
            handles += [Line2D([], [], ls="none", label=_REF_AD_NOTE)]
    return handles


def _kinds_in(rows) -> list[str]:
    present = set(rows["kind"])
    return [k for k in KIND_COLOURS if k in present] + sorted(present - set(KIND_COLOURS))


def _offsets(methods) -> dict[str, float]:
    """Small x offsets so the methods' CIs at one layer do not hide each other."""
    n = len(methods)
    width = 0.36 if n > 1 else 0.0
    return {m: (i - (n - 1) / 2) * (width / max(n - 1, 1)) for i, m in enumerate(sorted(methods))}


def _reference_rows(reference, rescaled: bool, rows, spec_map) -> pd.DataFrame | None:
    """The reference values for the plotted (method, layer, metric) cells only."""
    if reference is None:
        return None
    _require_columns(reference, ("method", "layer", "metric", "rescaled", "value"), "reference table")
    ref = reference[reference["rescaled"].astype(bool) == rescaled]
    keys = rows[["method", "layer", "metric"]].drop_duplicates()
    ref = ref.merge(keys, on=["method", "layer", "metric"], how="inner")
    if ref.empty:
        log.info("the reference values share no method/layer/metric with this figure; nothing overlaid.")
        return None
    return _add_layer_info(ref, spec_map)


def _with_reference_column(df: pd.DataFrame, ref: pd.DataFrame | None) -> pd.DataFrame:
    """The CSV also carries the overlaid reference value of each cell (NaN when none is drawn)."""
    if ref is None:
        out = df.copy()
        out["reference"] = np.nan
        return out
    return df.merge(ref[["method", "layer", "metric", "value"]].rename(columns={"value": "reference"}),
                    on=["method", "layer", "metric"], how="left")


# ------------------------------------------------------------------------------------------- reference

def load_reference(path) -> pd.DataFrame | None:
    """Per-layer values of the report's own code (report-results.json shape) as a long table.

    Columns: method, layer, metric, rescaled (bool), value. None (and one log line) when `path`
    is None or the file is absent. Note: that file's AD is about twice the defined AD.
    """
    if path is None or not Path(path).is_file():
        log.info("no reference values to overlay (%s).", "none configured" if path is None else f"{path} absent")
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayersweepError(f"the reference file {path} is not readable JSON ({exc}).") from None
    if not isinstance(data, dict) or not any(k in data for k in _REF_MODELS):
        raise LayersweepError(f"the reference file {path} has neither of the keys {', '.join(_REF_MODELS)}.")
    records = []
    for model, rescaled in _REF_MODELS.items():
        if model not in data:
            continue
        methods = data[model]
        if not isinstance(methods, dict) or not methods:
            raise LayersweepError(f"the reference file {path} key {model!r} is not a non-empty object of methods.")
        for ref_method, layers in methods.items():
            method = _REF_METHODS.get(ref_method, ref_method.lstrip("_").lower())
            if not isinstance(layers, dict) or not layers:
                raise LayersweepError(f"the reference file {path} key {model}.{ref_method} is not a non-empty "
                                      "object of layers.")
            for name, values in layers.items():
                head, _, idx = str(name).partition(".")
                if head != "features" or not idx.isdigit():
                    raise LayersweepError(f"the reference file {path} key {model}.{ref_method} names the layer "
                                          f"{name!r}; expected 'features.i'.")
                if not isinstance(values, dict):
                    raise LayersweepError(f"the reference file {path} key {model}.{ref_method}.{name} is not an object.")
                for ref_metric, metric in _REF_METRICS.items():
                    v = values.get(ref_metric)
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        raise LayersweepError(f"the reference file {path} key {model}.{ref_method}.{name}.{ref_metric} "
                                              f"is {'missing' if v is None else repr(v)}, not a number.")
                    records.append((method, int(idx), metric, rescaled, float(v)))
    return pd.DataFrame.from_records(records, columns=["method", "layer", "metric", "rescaled", "value"])


# -------------------------------------------------------------------------------------------------- fig2

def _transparent_diverging() -> ListedColormap:
    """RdBu_r whose centre (value 0) is transparent, so the crop shows where the map is ~0."""
    base = colormaps["RdBu_r"](np.linspace(0, 1, 256))
    base[:, 3] = np.clip(np.abs(np.linspace(-1, 1, 256)) ** 0.7 * 1.15, 0, 0.9)
    return ListedColormap(base, name="RdBu_r_transparent")


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, align_corners=False: the protocol's upsampling."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _long_map(crop_id, map_name, m: np.ndarray) -> pd.DataFrame:
    rows, cols = np.indices(m.shape)
    return pd.DataFrame({"crop_id": crop_id, "map": map_name, "row": rows.ravel(), "col": cols.ravel(),
                         "value": m.ravel().astype(float)})


def fig2(crops, crop_ids, maps_l18, maps_input, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Example crops beside their DeepLiftShap maps at features[18] and at the input.

    crops (N, H, W, 3) uint8 (or float in [0, 1]); maps_l18 (N, h, w); maps_input (N, H, W) or
    (N, C, H, W), summed over C. The CSV holds the maps at their native resolution.
    """
    crops = np.asarray(crops)
    maps_l18 = np.asarray(maps_l18, dtype=float)
    maps_input = np.asarray(maps_input, dtype=float)
    crop_ids = [str(c) for c in crop_ids]
    if crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise LayersweepError(f"fig2's crops must be a non-empty (N, H, W, 3) array, not shape {crops.shape}.")
    n, size = len(crops), crops.shape[1:3]
    if maps_input.ndim == 4:
        maps_input = maps_input.sum(axis=1)  # attributions per colour channel -> per pixel
    if len(crop_ids) != n:
        raise LayersweepError(f"fig2 got {len(crop_ids)} crop ids for {n} crops.")
    if maps_l18.ndim != 3 or len(maps_l18) != n:
        raise LayersweepError(f"fig2's features.18 maps must be (N={n}, h, w), not shape {maps_l18.shape}.")
    if maps_input.shape != (n, *size):
        raise LayersweepError(f"fig2's input maps must be (N={n}, {size[0]}, {size[1]}) or (N, C, H, W), "
                              f"not shape {maps_input.shape}.")
    if crops.dtype == np.uint8:
        crops = crops.astype(float) / 255.0

    table = pd.concat([_long_map(cid, name, m[i]) for i, cid in enumerate(crop_ids)
                       for name, m in (("features.18", maps_l18), ("input", maps_input))], ignore_index=True)

    cmap = _transparent_diverging()
    h18, w18 = maps_l18.shape[1:]
    fig = _new_figure((11.0, 3.2 * n + 0.6), demo)
    axes = fig.subplots(n, 3, squeeze=False)
    titles = ("crop", f"DeepLiftShap at features.18\n({h18}x{w18}, bilinear to {size[0]}x{size[1]})",
              "DeepLiftShap at the input\n(summed over RGB)")
    for i, cid in enumerate(crop_ids):
        gray = crops[i] @ np.array([0.299, 0.587, 0.114])
        axes[i, 0].imshow(np.clip(crops[i], 0, 1), interpolation="nearest")
        axes[i, 0].set_ylabel(f"crop {cid}", fontsize=10)
        for j, m in ((1, _upsample(maps_l18[i], size)), (2, maps_input[i])):
            ax = axes[i, j]
            lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
            lim = lim if lim > 0 else 1.0  # an all-zero map still gets a valid, centred scale
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1, alpha=0.45, interpolation="nearest")
            im = ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
            cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.ax.tick_params(labelsize=7)
            cb.formatter.set_powerlimits((-2, 3))
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
    fig.suptitle("Fig. 2: DeepLiftShap attributions (red > 0, blue < 0, colour scale centred at 0)", fontsize=12)
    return _write(fig, table, out_pdf, out_png, out_csv, dpi)


# -------------------------------------------------------------------------------------------------- fig3

def _layer_index(value, spec_map) -> int:
    return parse_layers([value], max(spec_map) + 1, key="figures.fig3_layers")[0]


def fig3(crop, specs, layers, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Receptive fields of the centre unit and the top-left corner unit of several layers, on one crop.

    The map of a layer with `jump` j has crop_size // j units per side (VGG: 'same' convolutions and
    non-overlapping pools); boxes are clipped to the crop, as rf_box does.
    """
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[-1] != 3 or crop.shape[0] != crop.shape[1]:
        raise LayersweepError(f"fig3's crop must be a square (S, S, 3) array, not shape {crop.shape}.")
    spec_map = _spec_map(specs)
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
    fig = _new_figure((3.0 * len(idx) + 0.4, 4.3), demo)
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
    return _write(fig, table, out_pdf, out_png, out_csv, dpi)


# -------------------------------------------------------------------------------------------------- fig4

def fig4(specs, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Receptive-field size (and jump) of one output unit against the layer."""
    spec_map = _spec_map(specs)
    if not spec_map:
        raise LayersweepError("fig4 got no layers.")
    table = pd.DataFrame([dict(layer=s.index, name=s.name, kind=s.kind, rf_size=s.rf_size, jump=s.jump)
                          for s in sorted(spec_map.values(), key=lambda s: s.index)])
    fig = _new_figure((10.0, 4.8), demo)
    ax = fig.subplots()
    ax.plot(table["layer"], table["rf_size"], color="0.6", lw=1.0, zorder=1)
    ax.plot(table["layer"], table["jump"], color="0.4", ls="--", lw=1.0, marker="x", ms=4, zorder=1)
    for kind in _kinds_in(table):
        part = table[table["kind"] == kind]
        ax.scatter(part["layer"], part["rf_size"], color=_kind_colour(kind), s=40, edgecolors="black",
                   linewidths=0.4, zorder=3, label=kind)
    for _, row in table.iterrows():
        ax.annotate(str(row["rf_size"]), (row["layer"], row["rf_size"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    _layer_axis(ax, table["layer"], spec_map)
    ax.set_ylim(0, table["rf_size"].max() * 1.12)
    ax.set_ylabel("pixels")
    ax.set_title("Fig. 4: receptive field of one unit of each layer's output")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.6", lw=1.0, marker="o", mfc="white", mec="black",
                       label="receptive-field size\n(side, input pixels)"),
                Line2D([], [], color="0.4", ls="--", lw=1.0, marker="x", ms=4,
                       label="jump (input pixels\nbetween units)")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, title="layer type", title_fontsize=9)
    return _write(fig, table, out_pdf, out_png, out_csv, dpi)


# ---------------------------------------------------------------------------------------------- fig5/6

def _metric_figure(rows, metrics, reference_rows, spec_map, title, demo, layout, figsize) -> Figure:
    methods = sorted(set(rows["method"]))
    markers, offsets = _method_markers(methods), _offsets(methods)
    fig = _new_figure(figsize, demo)
    axes = fig.subplots(*layout, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        _metric_panel(ax, rows, metric, spec_map, markers, offsets, reference_rows)
        ax.set_xlabel("layer")
    handles = _legend_handles(methods, markers, _kinds_in(rows), metrics, reference_rows)
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    n = pd.to_numeric(rows["n"], errors="coerce").dropna()
    n_text = "" if n.empty else f" over n = {int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + " crops"
    fig.suptitle(f"{title}\n(points: mean{n_text}, constant maps left out; bars: 95% bootstrap CI)", fontsize=11)
    return fig


def fig5(summary, out_pdf, out_png, out_csv, *, reference=None, demo, dpi, specs=None) -> pd.DataFrame:
    """AD, IC, insertion AUC, deletion AUC against layer (plain maps only).

    `reference` is load_reference()'s table (or None); its plain values are drawn as hollow markers.
    CSV: the summary's numbers plus a `reference` column (NaN where nothing is overlaid).
    """
    spec_map = _spec_map(specs)
    rows = _add_layer_info(_select_summary(summary, FIG5_METRICS, None, spec_map), spec_map)
    ref = _reference_rows(reference, False, rows, spec_map)
    fig = _metric_figure(rows, FIG5_METRICS, ref, spec_map, "Fig. 5: metrics of the maps of each layer",
                         demo, (2, 2), (15.0, 9.5))
    cols = ["method", "layer", "name", "kind", "metric", "mean", "ci_low", "ci_high", "n", "n_constant"]
    table = rows[cols].sort_values(["metric", "method", "layer"]).reset_index(drop=True)
    return _write(fig, _with_reference_column(table, ref), out_pdf, out_png, out_csv, dpi)


def fig6(summary, r, out_pdf, out_png, out_csv, *, reference=None, demo, dpi, specs=None) -> pd.DataFrame:
    """fig5's AD and IC panels for maps rescaled to sum r * H * W.

    The reference's rescaled values (computed with r = 0.3) are overlaid only when r is 0.3.
    """
    r = _check_r(r)
    spec_map = _spec_map(specs)
    rows = _add_layer_info(_select_summary(summary, RESCALED_METRICS, r, spec_map), spec_map)
    ref = None
    if reference is not None:
        if math.isclose(r, REFERENCE_R):
            ref = _reference_rows(reference, True, rows, spec_map)
        else:
            log.info("reference values were rescaled with r = %g, not %g; not overlaid on fig6.", REFERENCE_R, r)
    fig = _metric_figure(rows, RESCALED_METRICS, ref, spec_map,
                         f"Fig. 6: AD and IC after rescaling each map to sum r\u00b7H\u00b7W, r = {r:g}",
                         demo, (1, 2), (15.0, 5.6))
    cols = ["method", "layer", "name", "kind", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
            "n_constant", "n_clamped"]
    table = rows[cols].sort_values(["metric", "method", "layer"]).reset_index(drop=True)
    return _write(fig, _with_reference_column(table, ref), out_pdf, out_png, out_csv, dpi)


# -------------------------------------------------------------------------------------------------- fig7

def _select_paired(paired, r, method_a, method_b, spec_map) -> pd.DataFrame:
    """method_a minus method_b per (metric, layer, rescaled); rows stored the other way round are negated."""
    _require_columns(paired, PAIRED_COLUMNS, "paired-difference table")
    unknown = sorted(set(paired["metric"]) - set(RESCALED_METRICS))
    if unknown:
        raise LayersweepError(f"the paired-difference table has the unknown metric {unknown[0]!r}; "
                              f"expected one of {', '.join(RESCALED_METRICS)}.")
    fwd = (paired["method_a"] == method_a) & (paired["method_b"] == method_b)
    rev = (paired["method_a"] == method_b) & (paired["method_b"] == method_a)
    parts = []
    for rescaled, rr in ((False, None), (True, r)):
        sel = _match_r(paired["rescale_r"], rr)
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
                                      f"{metric!r} with {_describe_r(rr)}.")
    _check_layers(rows["layer"], spec_map, "paired-difference table")
    dup = rows.duplicated(["metric", "layer", "rescaled"], keep=False)
    if dup.any():
        k, l, s = rows.loc[dup, ["metric", "layer", "rescaled"]].iloc[0]
        raise LayersweepError(f"the paired-difference table has more than one row of {pair} for metric {k!r}, "
                              f"layer {l}, {_describe_r(r if s else None)}.")
    for metric in RESCALED_METRICS:
        part = rows[rows["metric"] == metric]
        plain, resc = (set(part.loc[part["rescaled"] == s, "layer"]) for s in (False, True))
        if plain ^ resc:
            l = sorted(plain ^ resc)[0]
            missing = _describe_r(r) if l in plain else _describe_r(None)
            raise LayersweepError(f"the paired-difference table has no row of {pair} for metric {metric!r}, "
                                  f"layer {l}, with {missing}.")
    return rows


def fig7(paired, r, out_pdf, out_png, out_csv, *, demo, dpi, method_a="gradcampp", method_b="deepliftshap",
         specs=None) -> pd.DataFrame:
    """method_a minus method_b (default Grad-CAM++ minus DeepLiftShap) per layer for AD and IC,
    without and with rescaling, with the paired-bootstrap CIs and a zero line.

    The paired table's `mean` is read as method_a - method_b of its row.
    """
    r = _check_r(r)
    spec_map = _spec_map(specs)
    rows = _add_layer_info(_select_paired(paired, r, method_a, method_b, spec_map), spec_map)
    la, lb = method_label(method_a), method_label(method_b)
    # Neutral series colours: blue/orange/green already mean layer types (the tick labels).
    series = {False: dict(color="0.3", marker="o", dx=-0.14, label="plain maps"),
              True: dict(color="#9467bd", marker="s", dx=0.14, label=f"rescaled, r = {r:g}")}
    fig = _new_figure((12.0, 8.5), demo)
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
        _layer_axis(ax, part["layer"], spec_map)
        title, _, _ = METRICS[metric]
        ax.set_title(f"{title}: {la} \u2212 {lb}  ({metric.upper()} {_better(metric)})", fontsize=11)
        ax.set_ylabel(f"\u0394 {metric.upper()} (percentage points)")
        ax.set_xlabel("layer (tick colour = layer type)")
    handles = [Line2D([], [], ls="none", marker=st["marker"], ms=6, color=st["color"], mec="black",
                      label=st["label"]) for st in series.values()]
    handles += [Line2D([], [], ls="none", marker="|", ms=14, mew=1.4, color="0.3", label="95% paired\nbootstrap CI"),
                Line2D([], [], color="black", lw=0.9, label="no difference")]
    handles += [Line2D([], [], ls="none", label=""), Line2D([], [], ls="none", label="x tick colour:")]
    handles += [Line2D([], [], ls="none", marker="s", ms=8, color=_kind_colour(k), label=k) for k in _kinds_in(rows)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    fig.suptitle(f"Fig. 7: difference between {la} and {lb}, per layer, without and with rescaling", fontsize=12)
    cols = ["metric", "layer", "name", "rescaled", "mean", "ci_low", "ci_high", "n"]
    table = rows[cols].sort_values(["metric", "rescaled", "layer"]).reset_index(drop=True)
    return _write(fig, table, out_pdf, out_png, out_csv, dpi)
