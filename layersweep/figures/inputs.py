"""Reading the figures' input tables: the layer metadata, the rescale factor, and the summary rows a figure
plots, checked so that a missing, duplicated or unknown row is one LayersweepError (and nothing is drawn)."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from ..errors import LayersweepError
from ..layers import LayerSpec, arch_layer_specs
from ..metrics.registry import all_columns
from .style import METRICS

FIG5_METRICS = ("ad", "ic", "insertion_auc", "deletion_auc")
RESCALED_METRICS = ("ad", "ic")
SUMMARY_COLUMNS = ("method", "layer", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
                   "n_constant", "n_clamped")
PAIRED_COLUMNS = ("metric", "layer", "rescale_r", "method_a", "method_b", "mean", "ci_low", "ci_high", "n")


@functools.lru_cache(maxsize=1)
def vgg11_specs() -> tuple[LayerSpec, ...]:
    """Layer metadata of torchvision VGG11's sites (its `features`)."""
    return arch_layer_specs("vgg11")


def specs_by_index(specs) -> dict[int, LayerSpec]:
    return {s.index: s for s in (vgg11_specs() if specs is None else specs)}


def describe_r(r) -> str:
    return "plain maps (rescale_r NaN)" if r is None else f"rescale_r = {r:g}"


def check_r(r) -> float:
    try:
        r = float(r)
    except (TypeError, ValueError):
        raise LayersweepError(f"the rescale factor r must be a number in (0, 1], not {r!r}.") from None
    if not 0 < r <= 1:
        raise LayersweepError(f"the rescale factor r must be in (0, 1], not {r!r}.")
    return r


def match_r(col: pd.Series, r) -> pd.Series:
    """Rows of plain maps (r None) or of rescale factor r (tolerant to a float32 round trip)."""
    vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    if r is None:
        return pd.Series(np.isnan(vals), index=col.index)
    return pd.Series(np.isclose(vals, r, rtol=1e-6, atol=1e-9), index=col.index)


def require_columns(df, columns, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise LayersweepError(f"the {what} must be a pandas DataFrame, not {type(df).__name__}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LayersweepError(f"the {what} lacks the column(s) {', '.join(missing)}.")


def check_layers(layers, spec_map, what: str) -> None:
    unknown = sorted(set(int(v) for v in layers) - set(spec_map))
    if unknown:
        raise LayersweepError(f"the {what} names layer {unknown[0]}, which is not one of the "
                              f"{len(spec_map)} layers (0..{max(spec_map)}).")


def select_methods(table, methods, what: str) -> pd.DataFrame:
    """The rows of `methods` (None: every method in the table); a method without rows is an error."""
    if methods is None:
        return table
    methods = list(methods)
    if not methods:
        raise LayersweepError(f"no methods to draw from the {what} (config key 'figures.methods').")
    present = set(table["method"])
    for method in methods:
        if method not in present:
            raise LayersweepError(f"the {what} has no rows for method {method!r} (config key 'figures.methods').")
    return table[table["method"].isin(methods)]


def select_summary(summary, metrics, r, spec_map, methods=None) -> pd.DataFrame:
    """The summary rows one figure plots (of `methods`, None = all); every (method, layer) must have every
    metric, once."""
    require_columns(summary, SUMMARY_COLUMNS, "summary table")
    summary = select_methods(summary, methods, "summary table")
    known = all_columns()  # the columns of every registered metric (METRICS: core's, with their labels)
    unknown = sorted(set(summary["metric"]) - set(METRICS) - set(known))
    if unknown:
        raise LayersweepError(f"the summary table has the unknown metric {unknown[0]!r}; "
                              f"expected one of {', '.join(dict.fromkeys([*METRICS, *known]))}.")
    rows = summary[summary["metric"].isin(metrics) & match_r(summary["rescale_r"], r)].copy()
    for metric in metrics:
        if not (rows["metric"] == metric).any():
            raise LayersweepError(f"the summary table has no rows for metric {metric!r} with {describe_r(r)}.")
    rows["layer"] = rows["layer"].astype(int)
    check_layers(rows["layer"], spec_map, "summary table")
    dup = rows.duplicated(["method", "layer", "metric"], keep=False)
    if dup.any():
        m, l, k = rows.loc[dup, ["method", "layer", "metric"]].iloc[0]
        raise LayersweepError(f"the summary table has more than one row for method {m!r}, layer {l}, "
                              f"metric {k!r} with {describe_r(r)}.")
    pairs = set(map(tuple, rows[["method", "layer"]].drop_duplicates().to_numpy()))
    for metric in metrics:
        have = set(map(tuple, rows.loc[rows["metric"] == metric, ["method", "layer"]].to_numpy()))
        if pairs - have:
            m, l = sorted(pairs - have)[0]
            raise LayersweepError(f"the summary table has no row for method {m!r}, layer {l}, "
                                  f"metric {metric!r} with {describe_r(r)}.")
    return rows


def add_layer_info(df: pd.DataFrame, spec_map) -> pd.DataFrame:
    df = df.copy()
    df["name"] = [spec_map[int(l)].name for l in df["layer"]]
    df["kind"] = [spec_map[int(l)].kind for l in df["layer"]]
    return df

