"""LIFT-CAM Table 2: the cosine similarity of a method's channel weights alpha^m with a reference's (SHAP-CAM
with many orderings), per (image, layer): alpha^m . alpha^ref / (|alpha^m| |alpha^ref|), NaN when a norm is 0;
then the mean over images with a percentile-bootstrap CI (docs/studies.md).

The weights are the `weights_{layer}` arrays of the attribution shards (attribution.store_weights); a method
and its reference are matched by crop id, so the two studies must evaluate the same samples (same data keys
and seed; the reference may hold only a prefix of the seeded order)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import LayersweepError
from ..metrics.summary import bootstrap_mean_ci, group_rng

COSINE_COLUMNS = ["method", "layer", "crop_id", "target", "cosine"]


def coefficient_cosine(weights: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, C) arrays, in float64; NaN where either row has norm 0."""
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if w.shape != r.shape or w.ndim != 2:
        raise LayersweepError(f"channel weights of shape {w.shape} cannot be compared with reference weights of "
                              f"shape {r.shape}.")
    norms = np.linalg.norm(w, axis=1) * np.linalg.norm(r, axis=1)
    out = np.full(len(w), np.nan)
    ok = norms > 0
    out[ok] = np.einsum("nc,nc->n", w[ok], r[ok]) / norms[ok]
    return out


def _weights_of(shards, layer: int) -> pd.DataFrame:
    """crop_id -> (target, weights row) of one method at one layer, from its shards (paths, or AttributionShards
    already read)."""
    from ..attribution.shards import as_attribution_shard

    parts = []
    for item in shards:
        shard = as_attribution_shard(item)
        if layer not in shard.weights:
            raise LayersweepError(f"{shard.name} holds no channel weights of layer {layer} "
                                  "(weights_{layer}); its study needs attribution.store_weights: true and the layer.")
        w = shard.weights[layer]
        parts.append(pd.DataFrame({"crop_id": shard.crop_ids, "target": shard.target, "weights": list(w)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["crop_id", "target", "weights"])


def cosine_per_image(method: str, method_shards, reference_shards, layer: int) -> pd.DataFrame:
    """One row per sample both sets of shards hold: method, layer, crop_id, target, cosine. Shards: paths of
    attribution shards, or AttributionShards (the reference's, read once for every method)."""
    ours = _weights_of(method_shards, layer)
    ref = _weights_of(reference_shards, layer)
    both = ours.merge(ref, on="crop_id", suffixes=("", "_ref"))
    differ = both["target"] != both["target_ref"]
    if differ.any():
        raise LayersweepError(f"sample '{both.loc[differ, 'crop_id'].iloc[0]}' is explained for class "
                              f"{both.loc[differ, 'target'].iloc[0]} by {method} but for class "
                              f"{both.loc[differ, 'target_ref'].iloc[0]} by the reference; the two studies must "
                              "explain the same classes.")
    if both.empty:
        cos = np.zeros(0)
    else:
        cos = coefficient_cosine(np.stack(both["weights"].to_list()), np.stack(both["weights_ref"].to_list()))
    return pd.DataFrame({"method": method, "layer": int(layer), "crop_id": both["crop_id"].to_numpy(),
                         "target": both["target"].to_numpy(np.int64), "cosine": cos},
                        columns=COSINE_COLUMNS)


def cosine_summary(per_image: pd.DataFrame, *, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """summarize()'s layout for metric `cosine`: mean over images with a finite cosine, percentile-bootstrap
    CI (the same seeded generator per (method, layer) as the summaries), n, and n_constant = images with a
    zero norm (NaN cosine)."""
    rows = []
    for (method, layer), g in per_image.groupby(["method", "layer"], sort=True):
        values = g["cosine"].to_numpy(float)
        finite = values[np.isfinite(values)]
        mean, lo, hi = bootstrap_mean_ci(finite, n_boot=n_boot, ci=ci,
                                         rng=group_rng(seed, method, int(layer), float("nan")))
        rows.append({"method": method, "layer": int(layer), "metric": "cosine", "rescale_r": np.nan,
                     "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(finite),
                     "n_constant": int(len(values) - len(finite)), "n_clamped": 0})
    return pd.DataFrame(rows, columns=["method", "layer", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
                                       "n_constant", "n_clamped"])
