"""The ground-truth study's analysis (layersweep/groundtruth.py) against direct computations."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layersweep.errors import LayersweepError
from layersweep.groundtruth import (groundtruth_table, mask_path_maps, metric_agreement, monotone_share,
                                    per_map_table)


def _per_map(seed=0, n_crops=12):
    rng = np.random.default_rng(seed)
    rows = []
    quality = {("a", 1): 0.2, ("a", 2): 0.5, ("b", 1): 0.7, ("b", 2): 0.9, ("c", 1): 0.35}
    for c in range(n_crops):
        for (method, layer), q in quality.items():
            gt = q + rng.normal(0, 0.05)
            rows.append({"crop_id": f"s{c:02d}", "method": method, "layer": layer, "gt_cosine": gt,
                         "gt_auc": gt / 2 + 0.5, "gt_mass": gt ** 2, "good": gt + rng.normal(0, 0.01),
                         "bad_lower": -gt, "noise": rng.normal()})
    return pd.DataFrame(rows)


def test_groundtruth_table_means_are_the_per_configuration_means():
    pm = _per_map()
    t = groundtruth_table(pm, n_boot=200, seed=1)
    want = pm.groupby(["method", "layer"])["gt_cosine"].mean()
    got = t[t["measure"] == "gt_cosine"].set_index(["method", "layer"])["mean"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    assert (t["ci_low"] <= t["mean"]).all() and (t["mean"] <= t["ci_high"]).all()
    best = t[(t["measure"] == "gt_cosine") & (t["rank"] == 1)]
    assert list(zip(best["method"], best["layer"])) == [("b", 2)]


def test_agreement_is_the_signed_correlation_of_configuration_means():
    pm = _per_map()
    cols = {"good": "higher", "bad_lower": "lower", "noise": "higher"}
    t = metric_agreement(pm, cols, n_boot=200, seed=2, n_boot_maps=50)
    means = pm.groupby(["method", "layer"])[["good", "gt_cosine", "noise"]].mean()
    row = t[(t.level == "configurations") & (t.metric == "good") & (t.measure == "gt_cosine")].set_index("statistic")
    assert row.loc["spearman", "correlation"] == pytest.approx(stats.spearmanr(means["good"], means["gt_cosine"]).statistic)
    assert row.loc["kendall", "correlation"] == pytest.approx(stats.kendalltau(means["good"], means["gt_cosine"]).statistic)
    assert row.loc["pearson", "correlation"] == pytest.approx(stats.pearsonr(means["good"], means["gt_cosine"]).statistic)
    # a lower-is-better metric that is minus the truth agrees perfectly
    bad = t[(t.metric == "bad_lower") & (t.measure == "gt_cosine") & (t.statistic == "spearman")]
    assert (bad["correlation"] < -0.99).all() and (bad["agreement"] > 0.99).all()
    # per map: every map a point
    maps = t[(t.level == "maps") & (t.metric == "noise") & (t.measure == "gt_auc") & (t.statistic == "pearson")]
    assert maps["correlation"].iloc[0] == pytest.approx(stats.pearsonr(pm["noise"], pm["gt_auc"]).statistic)
    assert maps["ci_low"].iloc[0] < 0 < maps["ci_high"].iloc[0]
    assert (t["n_configs"] == 5).all() and (t["n_samples"] == 12).all()


def test_per_map_table_keeps_the_correctly_classified_samples():
    a = pd.DataFrame({"crop_id": ["x", "y", "z"], "method": "m", "layer": 1, "score": 0.5, "ad": [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"crop_id": ["x", "y", "z"], "method": "m", "layer": 1, "gt_auc": [0.1, 0.2, 0.3]})
    preds = pd.DataFrame({"crop_id": ["x", "y", "z"], "correct": [True, False, True]})
    out, counts = per_map_table({"core": a, "groundtruth": b}, preds, {"ad": "lower", "gt_auc": "higher"})
    assert list(out["crop_id"]) == ["x", "z"] and list(out["ad"]) == [1.0, 3.0] and list(out["gt_auc"]) == [0.1, 0.3]
    assert counts == {"n_evaluated": 3, "n_correct": 2}
    with pytest.raises(LayersweepError, match="no prediction"):
        per_map_table({"core": a}, preds.iloc[:1], {"ad": "lower"})


def test_mask_path_runs_from_the_mask_to_noise():
    masks = np.zeros((2, 6, 6), np.uint8)
    masks[:, 2:4, 2:4] = 1
    path = mask_path_maps(masks, 20, 0, ["a", "b"])
    assert path.shape == (20, 2, 6, 6)
    assert np.array_equal(path[0], masks.astype(np.float32))
    assert not np.array_equal(path[-1][0], path[-1][1]) and 0 <= path[-1].min() and path[-1].max() < 1
    np.testing.assert_allclose(path[10], (1 - 10 / 19) * masks + 10 / 19 * path[-1], atol=1e-6)
    assert monotone_share(np.array([3, 2, 2, 1.0]), "higher") == 1.0
    assert monotone_share(np.array([1, 2, 1.0]), "lower") == 0.5
