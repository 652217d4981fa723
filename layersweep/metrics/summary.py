"""Aggregation of per-image metrics: means with seeded percentile-bootstrap CIs, and paired method differences.

`per_image` is the concatenation of `score_metric_shard` rows of one metric, plain maps or rescaled ones (column
`r`); a row is rescaled when its `r` is present and not NaN. Each row is one crop, so resampling rows of one
(method, layer, r) group is resampling crops.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..errors import LayersweepError

PLAIN_METRICS = ("ad", "ic", "deletion_auc", "insertion_auc")  # metric core's columns (the default)
RESCALED_METRICS = ("ad", "ic")                                # its rescaled ones


def _check(n_boot, ci):
    if int(n_boot) != n_boot or n_boot < 1:
        raise LayersweepError(f"config key 'summary.n_boot' must be a positive integer, not {n_boot!r}.")
    if not 0 < ci < 1:
        raise LayersweepError(f"config key 'summary.ci' must lie in (0, 1), not {ci!r}.")


def _with_r(per_image: pd.DataFrame) -> pd.DataFrame:
    for col in ("method", "layer", "constant"):
        if col not in per_image.columns:
            raise LayersweepError(f"per-image table has no column '{col}'.")
    df = per_image.copy()
    df["rescale_r"] = df["r"].astype(float) if "r" in df.columns else np.nan
    if "crop_id" in df.columns:
        dup = df.duplicated(["method", "crop_id", "layer", "rescale_r"])
        if dup.any():
            row = df.loc[dup].iloc[0]
            raise LayersweepError(f"per-image table holds crop '{row['crop_id']}' twice for method '{row['method']}', layer {row['layer']}.")
    return df


def group_rng(seed: int, *keys) -> np.random.Generator:
    """A generator per group, seeded from the group's own key: a group's CI does not depend on which other
    groups (methods, layers, r values) the table happens to hold."""
    words = [int(seed)]
    for k in keys:
        if isinstance(k, str):
            words.append(zlib.crc32(k.encode()))
        elif isinstance(k, float):
            words.append(0 if np.isnan(k) else 1 + int(round(k * 1e6)))
        else:
            words.append(int(k))
    return np.random.default_rng(np.random.SeedSequence(words))


def bootstrap_mean_ci(values: np.ndarray, *, n_boot: int, ci: float, rng: np.random.Generator):
    """(mean, low, high): percentile bootstrap of the mean, all resamples drawn in one array (n_boot, n).
    values: (n,) or (n, k) for k metrics resampled with the same indices. NaN when n == 0."""
    v = np.asarray(values, dtype=float)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    n = len(v)
    if n == 0:
        out = np.full((3, v.shape[1]), np.nan)
    else:
        idx = rng.integers(0, n, size=(int(n_boot), n))
        means = v[idx].mean(axis=1)                     # (n_boot, k)
        q = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
        out = np.vstack([v.mean(axis=0), q])
    return tuple(o[0] for o in out) if squeeze else tuple(out)


def summarize(per_image: pd.DataFrame, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
              metrics=None, rescaled_metrics=None) -> pd.DataFrame:
    """Mean and percentile-bootstrap CI of each metric per (method, layer, rescale_r).

    Columns: method, layer, metric, rescale_r (NaN for plain maps), mean, ci_low, ci_high, n (maps with a
    value, i.e. non-constant), n_constant, n_clamped (rescaled maps whose exponent was clamped; 0 for plain),
    n_no_value (non-constant maps left out for a missing value, e.g. the pointing game of a target without a box).
    Metrics: ad, ic, deletion_auc, insertion_auc for plain rows; ad and ic for rescaled ones. AD is the mean of
    the per-image terms (not the report code's per-batch sum). `metrics`: the columns to summarise in plain and
    rescaled rows (a metric's columns, layersweep.metrics.registry); None = core's. `rescaled_metrics`: the
    columns of rescaled rows when they differ (a metric's `rescaled`); None = `metrics`.
    """
    _check(n_boot, ci)
    df = _with_r(per_image)
    rows = []
    for (method, layer, r), g in df.groupby(["method", "layer", "rescale_r"], dropna=False, sort=True):
        if metrics is None:
            names = PLAIN_METRICS if np.isnan(r) else RESCALED_METRICS
        else:
            names = tuple(metrics if np.isnan(r) or rescaled_metrics is None else rescaled_metrics)
        missing = [m for m in names if m not in g.columns]
        if missing:
            raise LayersweepError(f"per-image table has no column '{missing[0]}'.")
        constant = g["constant"].astype(bool).to_numpy()
        vals = g.loc[~constant, list(names)].to_numpy(dtype=float)
        # a non-constant map always has every metric; drop a row only if one is missing anyway
        finite = np.isfinite(vals).all(axis=1)
        vals, n_no_value = vals[finite], int((~finite).sum())
        n_clamped = int(g["clamped"].eq(True).sum()) if "clamped" in g.columns and not np.isnan(r) else 0
        mean, lo, hi = bootstrap_mean_ci(vals, n_boot=n_boot, ci=ci,
                                         rng=group_rng(seed, method, int(layer), float(r)))
        for j, m in enumerate(names):
            rows.append({"method": method, "layer": int(layer), "metric": m, "rescale_r": float(r),
                         "mean": mean[j], "ci_low": lo[j], "ci_high": hi[j], "n": len(vals),
                         "n_constant": int(constant.sum()), "n_clamped": n_clamped, "n_no_value": n_no_value})
    cols = ["method", "layer", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n", "n_constant", "n_clamped",
            "n_no_value"]
    # plain rows first, then each r; the stable sort keeps the metric order within a group
    return pd.DataFrame(rows, columns=cols).sort_values(["method", "rescale_r", "layer"], na_position="first",
                                                        kind="stable", ignore_index=True)


def paired_difference(per_image: pd.DataFrame, *, metric: str, method_a: str = "gradcampp",
                      method_b: str = "deepliftshap", n_boot: int = 1000, ci: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """Mean over crops of metric(method_a) - metric(method_b) per (layer, rescale_r), with a paired bootstrap
    CI (crops resampled, both methods' values kept together). Only crops where both maps are non-constant.

    Columns: layer, rescale_r, metric, method_a, method_b, mean, ci_low, ci_high, n.
    """
    _check(n_boot, ci)
    df = _with_r(per_image)
    if metric not in df.columns:
        raise LayersweepError(f"per-image table has no metric column '{metric}'.")
    for m in (method_a, method_b):
        if not (df["method"] == m).any():
            raise LayersweepError(f"per-image table holds no rows of method '{m}'.")
    if "crop_id" not in df.columns:
        raise LayersweepError("per-image table has no column 'crop_id'.")
    keys = ["crop_id", "layer", "rescale_r"]
    ok = ~df["constant"].astype(bool) & df[metric].notna()
    a = df.loc[(df["method"] == method_a) & ok, keys + [metric]]
    b = df.loc[(df["method"] == method_b) & ok, keys + [metric]]
    # rescale_r NaN must match NaN: merge on a filled key
    a = a.assign(_r=a["rescale_r"].fillna(-1.0))
    b = b.assign(_r=b["rescale_r"].fillna(-1.0))
    both = a.merge(b.drop(columns="rescale_r"), on=["crop_id", "layer", "_r"], suffixes=("_a", "_b"))
    both["diff"] = both[f"{metric}_a"] - both[f"{metric}_b"]
    rows = []
    for (layer, r), g in both.groupby(["layer", "_r"], sort=True):
        r = np.nan if r == -1.0 else float(r)
        mean, lo, hi = bootstrap_mean_ci(g["diff"].to_numpy(float), n_boot=n_boot, ci=ci,
                                         rng=group_rng(seed, metric, int(layer), r))
        rows.append({"layer": int(layer), "rescale_r": r, "metric": metric, "method_a": method_a,
                     "method_b": method_b, "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(g)})
    cols = ["layer", "rescale_r", "metric", "method_a", "method_b", "mean", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=cols).sort_values(["rescale_r", "layer"], na_position="first",
                                                        kind="stable", ignore_index=True)
