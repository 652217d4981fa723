"""summarize and paired_difference against pandas and naive per-layer loops."""
import numpy as np
import pandas as pd
import pytest

from layersweep.errors import LayersweepError
from layersweep.metrics import paired_difference, summarize

METRICS = ["ad", "ic", "deletion_auc", "insertion_auc"]


def per_image_table(n_crops=40, layers=(0, 3, 7), seed=0):
    """Plain rows for two methods plus rescaled rows (r = 0.3), with constant maps and clamped maps."""
    rng = np.random.default_rng(seed)
    rows = []
    for method, shift in (("gradcampp", 5.0), ("deepliftshap", 0.0)):
        for layer in layers:
            for i in range(n_crops):
                const = rng.random() < 0.15
                vals = {"ad": rng.gamma(2, 10) + shift, "ic": 100.0 * (rng.random() < 0.3),
                        "deletion_auc": rng.random() * 0.3, "insertion_auc": rng.random() * 0.6}
                if const:
                    vals = {k: np.nan for k in vals}
                rows.append({"crop_id": f"c{i:03d}", "method": method, "layer": layer, "constant": const, **vals})
                rvals = {"ad": rng.gamma(2, 5) + shift, "ic": 100.0 * (rng.random() < 0.4)}
                if const:
                    rvals = {k: np.nan for k in rvals}
                rows.append({"crop_id": f"c{i:03d}", "method": method, "layer": layer, "constant": const,
                             "r": 0.3, "clamped": bool(rng.random() < 0.1) and not const, **rvals})
    return pd.DataFrame(rows)


def test_summarize_means_counts_and_cis():
    df = per_image_table()
    out = summarize(df, n_boot=400, ci=0.95, seed=1)
    assert list(out.columns) == ["method", "layer", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
                                 "n_constant", "n_clamped", "n_no_value"]
    assert (out["n_no_value"] == 0).all()  # every non-constant map has its values
    plain, resc = df[df["r"].isna()], df[df["r"].notna()]
    want = plain.groupby(["method", "layer"])[METRICS].mean()
    want_r = resc.groupby(["method", "layer"])[["ad", "ic"]].mean()
    for _, row in out.iterrows():
        if np.isnan(row.rescale_r):
            src, ref = plain, want
        else:
            assert row.rescale_r == 0.3 and row.metric in ("ad", "ic")  # no curves for rescaled rows
            src, ref = resc, want_r
        g = src[(src.method == row.method) & (src.layer == row.layer)]
        assert row["mean"] == pytest.approx(ref.loc[(row.method, row.layer), row.metric])
        assert row.n == int((~g.constant).sum()) and row.n_constant == int(g.constant.sum())
        assert row.n_clamped == (int(g["clamped"].eq(True).sum()) if row.rescale_r == 0.3 else 0)
        assert row.ci_low <= row["mean"] <= row.ci_high
    assert len(out) == 2 * 3 * (4 + 2)
    # seeded: same seed same CIs, another seed other CIs
    again = summarize(df, n_boot=400, ci=0.95, seed=1)
    pd.testing.assert_frame_equal(out, again)
    other = summarize(df, n_boot=400, ci=0.95, seed=2)
    assert not np.allclose(other.ci_low, out.ci_low)
    # a group's CI does not depend on the other groups in the table
    alone = summarize(df[df.layer == 3], n_boot=400, ci=0.95, seed=1)
    pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                  out[out.layer == 3].reset_index(drop=True))


def test_bootstrap_ci_width_matches_normal_theory():
    """For n = 400 normal values the percentile CI is close to mean +- 1.96 sd / sqrt(n)."""
    rng = np.random.default_rng(5)
    v = rng.normal(10, 3, size=400)
    df = pd.DataFrame({"crop_id": [f"c{i}" for i in range(400)], "method": "m", "layer": 0, "constant": False,
                       "ad": v, "ic": v, "deletion_auc": v, "insertion_auc": v})
    out = summarize(df, n_boot=4000, ci=0.95, seed=0)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v))
    for _, row in out.iterrows():
        assert (row.ci_high - row.ci_low) / 2 == pytest.approx(half, rel=0.1)


def test_paired_difference_equals_naive_per_layer():
    df = per_image_table(seed=3)
    for metric in ("ad", "ic"):
        out = paired_difference(df, metric=metric, n_boot=300, ci=0.9, seed=0)
        assert len(out) == 3 * 2  # layers x (plain, r=0.3)
        for _, row in out.iterrows():
            diffs = []
            sel = df[(df.layer == row.layer) & (df["r"].isna() if np.isnan(row.rescale_r) else df["r"] == row.rescale_r)]
            for crop in sorted(sel.crop_id.unique()):
                a = sel[(sel.crop_id == crop) & (sel.method == "gradcampp")].iloc[0]
                b = sel[(sel.crop_id == crop) & (sel.method == "deepliftshap")].iloc[0]
                if not a.constant and not b.constant:
                    diffs.append(a[metric] - b[metric])
            assert row.n == len(diffs)
            assert row["mean"] == pytest.approx(np.mean(diffs))
            assert row.ci_low <= row["mean"] <= row.ci_high
    # the paired CI is narrower than the unpaired one would be when the methods share a per-crop effect
    shared = per_image_table(seed=4)
    shared["ad"] = shared["ad"] + shared.crop_id.str[1:].astype(int) * 3.0  # hard crops are hard for both
    paired = paired_difference(shared, metric="ad", n_boot=500, ci=0.95, seed=0)
    summ = summarize(shared, n_boot=500, ci=0.95, seed=0)
    s = summ[(summ.metric == "ad") & (summ.layer == 0) & summ.rescale_r.isna()]
    p = paired[(paired.layer == 0) & paired.rescale_r.isna()].iloc[0]
    assert (p.ci_high - p.ci_low) < (s.ci_high - s.ci_low).min()


def test_paired_ci_width_matches_normal_theory():
    """n = 600 crops with a large per-crop effect shared by both methods: the paired CI's half-width is
    1.96 sd(a - b) / sqrt(n) (an unpaired CI would be ~10x wider), centred on the mean, per (layer, r) group."""
    rng = np.random.default_rng(6)
    n = 600
    effect = rng.normal(0, 50, n)  # hard crops are hard for both methods
    noise = {(m, r): rng.normal(loc, sd, n) for (m, r), (loc, sd) in {
        ("gradcampp", np.nan): (2.0, 3.0), ("deepliftshap", np.nan): (0.0, 4.0),
        ("gradcampp", 0.3): (0.0, 1.0), ("deepliftshap", 0.3): (-1.0, 1.0)}.items()}
    constant_a = rng.random(n) < 0.1  # excluded from the pairs
    rows = []
    for (method, r), e in noise.items():
        const = constant_a if method == "gradcampp" else np.zeros(n, bool)
        rows.append(pd.DataFrame({"crop_id": [f"c{i:03d}" for i in range(n)], "method": method, "layer": 2,
                                  "r": r, "constant": const, "ad": np.where(const, np.nan, effect + e)}))
    df = pd.concat(rows, ignore_index=True)
    out = paired_difference(df, metric="ad", n_boot=4000, ci=0.95, seed=0)
    assert len(out) == 2
    for row in out.itertuples():
        r = row.rescale_r
        key = (lambda m: (m, np.nan)) if np.isnan(r) else (lambda m: (m, r))
        diffs = (noise[key("gradcampp")] - noise[key("deepliftshap")])[~constant_a]
        half = 1.96 * diffs.std(ddof=1) / np.sqrt(len(diffs))
        assert row.n == len(diffs) and row.mean == pytest.approx(diffs.mean(), rel=1e-9)
        assert (row.ci_high - row.ci_low) / 2 == pytest.approx(half, rel=0.1), r
        assert abs((row.ci_high + row.ci_low) / 2 - row.mean) < 0.15 * half, r


def test_summary_bad_input():
    df = per_image_table(n_crops=5)
    with pytest.raises(LayersweepError, match="twice"):
        summarize(pd.concat([df, df.iloc[:1]]), n_boot=10, ci=0.95, seed=0)
    with pytest.raises(LayersweepError, match="constant"):
        summarize(df.drop(columns="constant"), n_boot=10, ci=0.95, seed=0)
    with pytest.raises(LayersweepError, match="nosuch"):
        paired_difference(df, metric="ad", method_a="nosuch", n_boot=10, ci=0.95, seed=0)
    with pytest.raises(LayersweepError, match="ci"):
        summarize(df, n_boot=10, ci=1.5, seed=0)
