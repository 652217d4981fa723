"""The ground-truth study's analysis (docs/groundtruth.md): which configuration (method x layer, and mixer where a
method has one) lies closest to the ground-truth masks, and which metrics agree with the truth.

- `per_map_table`: every metric's per-image rows of a study merged into one row per (crop, method, layer), kept
  for the correctly classified test samples only (the model's predictions from the finetune rule);
- `groundtruth_table`: each ground-truth measure's mean per configuration with a percentile-bootstrap CI over
  the samples;
- `metric_agreement`: each metric column's Spearman, Kendall and Pearson correlation with each ground-truth
  measure, at two levels: across configurations (the per-configuration means; the bootstrap resamples the
  samples and recomputes the means) and across maps (every map a point; the bootstrap resamples samples, all
  maps of a drawn sample together). `agreement` is the correlation signed so that positive means "the metric
  calls better what is closer to the truth" (a lower-is-better metric's correlation is negated);
- `mask_path_shard`: maps along a path from the mask to a uniform random map, for `metric-degradation`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .errors import LayersweepError

GT_MEASURES = ("gt_cosine", "gt_auc", "gt_mass")
KEY = ["crop_id", "method", "layer"]
STATISTICS = ("spearman", "kendall", "pearson")
# per-image columns that are bookkeeping, not a metric's value
NOT_METRICS = {"crop_id", "method", "layer", "target", "score", "constant", "r", "explanation_score"}


def per_map_table(tables: dict, predictions: pd.DataFrame, columns: dict) -> tuple[pd.DataFrame, dict]:
    """(one row per (crop_id, method, layer) of the correctly classified samples with every column of `columns`,
    counts). tables: {metric: its per-image rows (plain maps)}; columns: {column: direction} of the metrics'
    columns to keep; predictions: crop_id, correct."""
    merged = None
    for name, df in tables.items():
        keep = [c for c in columns if c in df.columns]
        if not keep:
            continue
        part = df[KEY + keep + (["score"] if merged is None else [])]
        if part.duplicated(KEY).any():
            raise LayersweepError(f"the per-image table of metric '{name}' holds a (crop, method, layer) twice.")
        merged = part if merged is None else merged.merge(part, on=KEY, how="outer")
    if merged is None:
        raise LayersweepError("no per-image table holds any of the metric columns to analyse.")
    missing = sorted(set(merged["crop_id"]) - set(predictions["crop_id"].astype(str)))
    if missing:
        raise LayersweepError(f"sample '{missing[0]}' has maps but no prediction; rerun the finetune rule.")
    correct = set(predictions.loc[predictions["correct"].astype(bool), "crop_id"].astype(str))
    evaluated = merged["crop_id"].unique()
    counts = {"n_evaluated": int(len(evaluated)), "n_correct": int(sum(c in correct for c in evaluated))}
    out = merged[merged["crop_id"].isin(correct)].sort_values(KEY).reset_index(drop=True)
    return out, counts


def _bootstrap_draws(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_items) multiplicities of each item in each resample (sampling with replacement)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 18]))
    idx = rng.integers(0, n_items, size=(int(n_boot), n_items))
    counts = np.zeros((int(n_boot), n_items))
    np.add.at(counts, (np.arange(int(n_boot))[:, None], idx), 1)
    return counts


def _config_matrix(per_map: pd.DataFrame, column: str, configs: list, crops: list) -> np.ndarray:
    """(n_crops, n_configs) of `column`, NaN where a map is missing or constant."""
    wide = per_map.pivot_table(index="crop_id", columns=["method", "layer"], values=column, aggfunc="first",
                               dropna=False)
    wide = wide.reindex(index=crops, columns=pd.MultiIndex.from_tuples(configs, names=["method", "layer"]))
    return wide.to_numpy(dtype=float)


def _weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, n_configs) NaN-aware means of values (n, k) with per-resample weights (B, n)."""
    ok = np.isfinite(values)
    num = weights @ np.where(ok, values, 0.0)
    den = weights @ ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def groundtruth_table(per_map: pd.DataFrame, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                      measures=GT_MEASURES) -> pd.DataFrame:
    """method, layer, measure, mean, ci_low, ci_high, n (maps with a value), n_constant, rank (1 = closest to the
    truth among the configurations, per measure)."""
    crops = sorted(per_map["crop_id"].unique())
    configs = list(per_map.groupby(["method", "layer"], sort=False).size().index)
    weights = _bootstrap_draws(len(crops), n_boot, seed)
    rows = []
    for measure in measures:
        v = _config_matrix(per_map, measure, configs, crops)
        boot = _weighted_means(v, weights)
        lo, hi = np.nanquantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
        mean = np.nanmean(np.where(np.isfinite(v), v, np.nan), axis=0) if len(v) else np.full(len(configs), np.nan)
        n = np.isfinite(v).sum(axis=0)
        for j, (method, layer) in enumerate(configs):
            rows.append({"method": method, "layer": int(layer), "measure": measure, "mean": mean[j],
                         "ci_low": lo[j], "ci_high": hi[j], "n": int(n[j]), "n_constant": int(len(crops) - n[j])})
    out = pd.DataFrame(rows)
    out["rank"] = out.groupby("measure")["mean"].rank(ascending=False, method="min").astype("Int64")
    return out


def _corr(stat: str, a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    if stat == "spearman":
        return float(stats.spearmanr(a, b).statistic)
    if stat == "kendall":
        return float(stats.kendalltau(a, b).statistic)
    return float(stats.pearsonr(a, b).statistic)


def metric_agreement(per_map: pd.DataFrame, columns: dict, *, n_boot: int = 1000, ci: float = 0.95,
                     seed: int = 0, measures=GT_MEASURES, n_boot_maps: int | None = None) -> pd.DataFrame:
    """level (configurations | maps), metric, direction, measure, statistic, correlation, agreement, ci_low,
    ci_high (of the agreement), n_configs, n_maps, n_samples. columns: {metric column: higher | lower}.
    n_boot_maps: resamples of the maps level (default n_boot)."""
    crops = sorted(per_map["crop_id"].unique())
    configs = list(per_map.groupby(["method", "layer"], sort=False).size().index)
    weights = _bootstrap_draws(len(crops), n_boot, seed)
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    crop_pos = {c: i for i, c in enumerate(crops)}
    map_crop = per_map["crop_id"].map(crop_pos).to_numpy()
    maps_weights = weights[: (n_boot if n_boot_maps is None else n_boot_maps)]
    matrices = {c: _config_matrix(per_map, c, configs, crops) for c in [*columns, *measures]}
    rows = []
    for col, direction in columns.items():
        if direction not in ("higher", "lower") or col in measures:  # a measure against itself says nothing
            continue
        sign = 1.0 if direction == "higher" else -1.0
        mv = matrices[col]
        m_means = np.nanmean(mv, axis=0) if len(mv) else np.array([])
        m_boot = _weighted_means(mv, weights)
        for measure in measures:
            gv = matrices[measure]
            g_means = np.nanmean(gv, axis=0)
            g_boot = _weighted_means(gv, weights)
            a_map, b_map = per_map[col].to_numpy(float), per_map[measure].to_numpy(float)
            for stat in STATISTICS:
                r = _corr(stat, m_means, g_means)
                boot = np.array([_corr(stat, m_boot[b], g_boot[b]) for b in range(len(weights))])
                lo, hi = np.nanquantile(sign * boot, q) if np.isfinite(boot).any() else (np.nan, np.nan)
                rows.append({"level": "configurations", "metric": col, "direction": direction, "measure": measure,
                             "statistic": stat, "correlation": r, "agreement": sign * r, "ci_low": lo,
                             "ci_high": hi, "n_configs": len(configs), "n_maps": int(len(per_map)),
                             "n_samples": len(crops)})
                r = _corr(stat, a_map, b_map)
                boot = []
                for w in maps_weights:  # a resample: every map of each drawn sample, as often as it is drawn
                    reps = w[map_crop].astype(int)
                    boot.append(_corr(stat, np.repeat(a_map, reps), np.repeat(b_map, reps)))
                boot = np.array(boot)
                lo, hi = np.nanquantile(sign * boot, q) if np.isfinite(boot).any() else (np.nan, np.nan)
                rows.append({"level": "maps", "metric": col, "direction": direction, "measure": measure,
                             "statistic": stat, "correlation": r, "agreement": sign * r, "ci_low": lo,
                             "ci_high": hi, "n_configs": len(configs), "n_maps": int(len(per_map)),
                             "n_samples": len(crops)})
    return pd.DataFrame(rows)


def mask_path_maps(masks: np.ndarray, n_steps: int, seed: int, crop_ids) -> np.ndarray:
    """(n_steps, n, H, W) float32: step k of sample i is (1 - t_k) M_i + t_k U_i, t = linspace(0, 1, n_steps),
    with U_i a uniform random map drawn from (seed, crop id): from the mask (t = 0) to noise (t = 1)."""
    import zlib

    m = np.asarray(masks, dtype=np.float64)
    noise = np.stack([np.random.default_rng([int(seed), zlib.crc32(str(c).encode())]).random(m.shape[1:])
                      for c in crop_ids]) if len(m) else np.zeros_like(m)
    t = np.linspace(0, 1, int(n_steps))[:, None, None, None]
    return ((1 - t) * m[None] + t * noise[None]).astype(np.float32)


def monotone_share(curve: np.ndarray, direction: str) -> float:
    """Share of the steps along the path on which the metric's mean gets worse (or stays): 1 = monotone."""
    d = np.diff(np.asarray(curve, dtype=float))
    d = d[np.isfinite(d)]
    if direction == "lower":
        d = -d
    return float(np.mean(d <= 1e-12)) if len(d) else np.nan


def degradation_table(model, crops, masks, crop_ids, targets, metrics: dict, *, n_steps: int = 20, seed: int = 0,
                      device="cpu", score_kwargs: dict | None = None, progress: bool = False) -> pd.DataFrame:
    """Every metric of `metrics` ({name: options}; none that recomputes explanations) on the maps along the path
    from each sample's mask to a uniform random map (`mask_path_maps`): one row per (sample, step, metric
    column) with the step's t. crops (n, S, S, 3) uint8, masks (n, S, S)."""
    from .attribution.shards import AttributionShard
    from .metrics import get_metric, score_metric_shard

    maps = mask_path_maps(masks, n_steps, seed, crop_ids)
    shard = AttributionShard(method="maskpath", crop_id=np.asarray(list(map(str, crop_ids))),
                             target=np.asarray(targets, dtype=np.int64), maps={k: maps[k] for k in range(n_steps)},
                             name="mask-to-noise path")
    t = np.linspace(0, 1, int(n_steps))
    parts = []
    for name, options in metrics.items():
        metric = get_metric(name)
        if "attribution" in metric.needs:
            raise LayersweepError(f"metric '{name}' recomputes the method's explanations; a path of maps has no "
                                  f"method, so it cannot be scored along it.")
        df = score_metric_shard(name, model, crops, shard, options=options, seed=seed, device=device,
                                masks=masks if "masks" in metric.needs else None, progress=progress,
                                **(score_kwargs or {}))
        cols = [c for c, d in metric.columns.items() if d != "none"]
        long = df.melt(id_vars=["crop_id", "layer"], value_vars=cols, var_name="column", value_name="value")
        long["metric"] = name
        long["direction"] = long["column"].map(metric.columns)
        parts.append(long)
    out = pd.concat(parts, ignore_index=True).rename(columns={"layer": "step"})
    out["t"] = t[out["step"].to_numpy()]
    return out
