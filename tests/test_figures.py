"""Figures 2-7: files are written (PDF, PNG, CSV), the CSV holds exactly the input numbers, bad input
raises LayersweepError and leaves nothing behind."""
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from layersweep import figures
from layersweep.figures import style
from layersweep.errors import LayersweepError
from layersweep.layers import layer_specs

REFERENCE_JSON = Path(__file__).resolve().parents[2] / "shared" / "reference" / "report-results.json"
needs_reference = pytest.mark.skipif(
    not REFERENCE_JSON.is_file(),
    reason=f"the report's numbers {REFERENCE_JSON} are absent (they live in ../shared, not in a plain clone)")
DPI = 40  # small renders keep the suite fast; the layout code path is the same
METHODS = ("deepliftshap", "gradcampp")
KINDS = ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Conv2d", "ReLU",
         "MaxPool2d", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Conv2d", "ReLU",
         "MaxPool2d"]  # VGG11 features, written out by hand


# ---------------------------------------------------------------------------------------------- fixtures

def _summary(seed=0, methods=METHODS, r=0.3):
    """21 layers x methods: 4 plain metrics, plus AD/IC rescaled with r; random seeded numbers."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for layer in range(21):
            for metric, rr in [(m, np.nan) for m in figures.FIG5_METRICS] + [("ad", r), ("ic", r)]:
                scale = 100.0 if metric in ("ad", "ic") else 1.0
                mean = rng.uniform(0.1, 0.9) * scale
                lo, hi = sorted(rng.uniform(0, 0.1, 2) * scale)
                rows.append(dict(method=method, layer=layer, metric=metric, rescale_r=rr, mean=mean,
                                 ci_low=mean - lo, ci_high=mean + hi, n=int(rng.integers(900, 1025)),
                                 n_constant=int(rng.integers(0, 5)), n_clamped=int(rng.integers(0, 3))))
    return pd.DataFrame(rows)


def _paired(seed=1, r=0.3, method_a="gradcampp", method_b="deepliftshap"):
    rng = np.random.default_rng(seed)
    rows = []
    for metric in ("ad", "ic"):
        for rr in (np.nan, r):
            for layer in range(21):
                mean = rng.normal(0, 20)
                rows.append(dict(metric=metric, layer=layer, rescale_r=rr, method_a=method_a, method_b=method_b,
                                 mean=mean, ci_low=mean - rng.uniform(0, 3), ci_high=mean + rng.uniform(0, 3),
                                 n=int(rng.integers(900, 1025))))
    return pd.DataFrame(rows)


def _outs(tmp_path, stem):
    return tmp_path / f"{stem}.pdf", tmp_path / f"{stem}.png", tmp_path / "tables" / f"{stem}.csv"


def _assert_files(pdf, png, csv):
    assert pdf.stat().st_size > 0 and pdf.read_bytes()[:4] == b"%PDF"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv.stat().st_size > 0
    return pd.read_csv(csv)


def _assert_same_numbers(csv, expected, keys, values):
    """Merge on keys: every expected row is present once, with identical numbers, and nothing more."""
    assert len(csv) == len(expected)
    assert not csv.duplicated(keys).any()
    merged = expected.merge(csv, on=keys, how="left", suffixes=("_exp", "_csv"), indicator=True)
    assert (merged["_merge"] == "both").all()
    for v in values:
        np.testing.assert_array_equal(merged[f"{v}_csv"].to_numpy(float), merged[f"{v}_exp"].to_numpy(float),
                                      err_msg=v)


def _no_files(tmp_path):
    return [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def specs():
    return layer_specs(make_layers(cfgs["A"]))


# ----------------------------------------------------------------------------------------------- fig2

def test_fig2_csv_holds_native_maps(tmp_path):
    rng = np.random.default_rng(2)
    n, s = 2, 32
    crops = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    m18 = rng.normal(size=(n, 2, 2))
    m_in = rng.normal(size=(n, 3, s, s))
    ids = ["000005_0", "000007_1"]
    pdf, png, csv = _outs(tmp_path, "fig2")
    df = figures.fig2(crops, ids, m18, m_in, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    got["crop_id"] = got["crop_id"].astype(str)
    # Independent long table by explicit loops; the input map is summed over channels.
    rows = []
    for i, cid in enumerate(ids):
        for name, m in (("features.18", m18[i]), ("input", m_in[i, 0] + m_in[i, 1] + m_in[i, 2])):
            for r in range(m.shape[0]):
                for c in range(m.shape[1]):
                    rows.append(dict(crop_id=cid, map=name, row=r, col=c, value=m[r, c]))
    expected = pd.DataFrame(rows)
    _assert_same_numbers(got, expected, ["crop_id", "map", "row", "col"], [])
    merged = expected.merge(got, on=["crop_id", "map", "row", "col"])
    np.testing.assert_allclose(merged["value_y"], merged["value_x"], rtol=1e-12, atol=1e-12)
    assert len(df) == len(expected)


def test_fig2_rejects_mismatched_maps(tmp_path):
    crops = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(LayersweepError, match="input maps"):
        figures.fig2(crops, ["a", "b"], np.zeros((2, 1, 1)), np.zeros((2, 8, 8)), *_outs(tmp_path, "fig2"),
                     demo=False, dpi=DPI)
    with pytest.raises(LayersweepError, match="crop ids"):
        figures.fig2(crops, ["a"], np.zeros((2, 1, 1)), np.zeros((2, 16, 16)), *_outs(tmp_path, "fig2"),
                     demo=False, dpi=DPI)
    assert _no_files(tmp_path) == []


# ----------------------------------------------------------------------------------------------- fig3

def _backward_box(features: nn.Sequential, layer: int, row: int, col: int, size: int):
    """Input pixels a unit sees, by walking its index interval back through each module (a different
    algorithm from layer_specs' forward recursion), clipped to the image."""
    lo_r = hi_r = row
    lo_c = hi_c = col
    for module in reversed(list(features)[: layer + 1]):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (module.kernel_size, module.stride, module.padding))
            lo_r, hi_r = lo_r * s - p, hi_r * s - p + k - 1
            lo_c, hi_c = lo_c * s - p, hi_c * s - p + k - 1
    clip = lambda v: max(0, min(size, v))  # noqa: E731
    return clip(lo_r), clip(lo_c), clip(hi_r + 1), clip(hi_c + 1)


def _map_size(features: nn.Sequential, layer: int, size: int) -> int:
    """Output side of module `layer` by the convolution arithmetic formula."""
    for module in list(features)[: layer + 1]:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (module.kernel_size, module.stride, module.padding))
            size = (size + 2 * p - k) // s + 1
    return size


@pytest.mark.parametrize("size", [64, 224])
def test_fig3_boxes_match_backward_walk(tmp_path, specs, size):
    features = make_layers(cfgs["A"])
    crop = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)
    layers = [2, 10, 15, 20]
    pdf, png, csv = _outs(tmp_path, "fig3")
    figures.fig3(crop, specs, layers, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    rows = []
    for layer in layers:
        units = _map_size(features, layer, size)
        for r in (units // 2, 0):  # centre unit, corner unit
            top, left, bottom, right = _backward_box(features, layer, r, r, size)
            rows.append(dict(layer=layer, name=f"features.{layer}", unit_row=r, unit_col=r,
                             top=top, left=left, bottom=bottom, right=right))
    expected = pd.DataFrame(rows)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got.sort_values(["layer", "unit_row"]).reset_index(drop=True),
                                  expected.sort_values(["layer", "unit_row"]).reset_index(drop=True),
                                  check_dtype=False)
    if size == 224:  # the report: a features.20 unit sees 150x150 pixels
        centre = got[(got["layer"] == 20) & (got["unit_row"] == 3)].iloc[0]
        assert centre["bottom"] - centre["top"] == 150


def test_fig3_rejects_unknown_layer(tmp_path, specs):
    crop = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(LayersweepError, match="features.21"):
        figures.fig3(crop, specs, [2, "features.21"], *_outs(tmp_path, "fig3"), demo=False, dpi=DPI)
    assert _no_files(tmp_path) == []


# ----------------------------------------------------------------------------------------------- fig4

def test_fig4_rf_sizes_by_hand(tmp_path, specs):
    pdf, png, csv = _outs(tmp_path, "fig4")
    figures.fig4(specs, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    # 3x3 convs add 2*jump, 2x2 pools add jump then double it.
    assert got["rf_size"].tolist() == [3, 3, 4, 8, 8, 10, 18, 18, 26, 26, 30, 46, 46, 62, 62, 70, 102, 102,
                                       134, 134, 150]
    assert got["jump"].tolist() == [1, 1, 2, 2, 2, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16, 32]
    assert got["kind"].tolist() == KINDS
    assert got["name"].tolist() == [f"features.{i}" for i in range(21)]
    assert got["layer"].tolist() == list(range(21))


def _red_pixels(png: Path) -> int:
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((a[..., 0] > 200) & (a[..., 1] < 90) & (a[..., 2] < 90)).sum())


def test_demo_stamp_is_drawn(tmp_path, specs):
    plain, demo = tmp_path / "plain", tmp_path / "demo"
    figures.fig4(specs, *_outs(plain, "fig4"), demo=False, dpi=DPI)
    figures.fig4(specs, *_outs(demo, "fig4"), demo=True, dpi=DPI)
    # fig4 itself draws almost nothing pure red (only anti-aliased orange edges); the stamp is red text.
    assert _red_pixels(demo / "fig4.png") > _red_pixels(plain / "fig4.png") + 100
    assert "not the study's results" in figures.DEMO_STAMP


# ------------------------------------------------------------------------------------------- fig5/6

FIG5_COLS = ["mean", "ci_low", "ci_high", "n", "n_constant"]


def test_fig5_csv_equals_summary(tmp_path):
    summary = _summary()
    pdf, png, csv = _outs(tmp_path, "fig5")
    figures.fig5(summary, pdf, png, csv, demo=True, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    expected = summary[summary["rescale_r"].isna()]
    _assert_same_numbers(got, expected, ["method", "layer", "metric"], FIG5_COLS)
    assert set(got["metric"]) == set(figures.FIG5_METRICS)
    assert got["reference"].isna().all()
    kinds = got.drop_duplicates("layer").set_index("layer")["kind"].sort_index().tolist()
    assert kinds == KINDS


def test_fig5_any_other_method(tmp_path):
    # A method the style module does not know (e.g. one added later) still draws, labelled by its name.
    summary = _summary(methods=("deepliftshap", "gradcampp", "newcam"))
    pdf, png, csv = _outs(tmp_path, "fig5")
    figures.fig5(summary, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    _assert_same_numbers(got, summary[summary["rescale_r"].isna()], ["method", "layer", "metric"], FIG5_COLS)
    assert figures.method_label("newcam") == "newcam"
    assert figures.method_label("scorecam") == "Score-CAM"
    assert len(set(style.method_markers(["deepliftshap", "gradcampp", "newcam"]).values())) == 3


@needs_reference
@pytest.mark.parametrize("fig", ["fig5", "fig6"])
def test_reference_overlay_values(tmp_path, fig):
    ref = figures.load_reference(REFERENCE_JSON)
    summary = _summary()
    pdf, png, csv = _outs(tmp_path, fig)
    if fig == "fig5":
        figures.fig5(summary, pdf, png, csv, reference=ref, demo=False, dpi=DPI)
    else:
        figures.fig6(summary, 0.3, pdf, png, csv, reference=ref, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    raw = json.loads(REFERENCE_JSON.read_text())["VGG11" if fig == "fig5" else "VGG11_Rescaling"]
    keys = {"ad": "avg_drop", "ic": "increase", "insertion_auc": "insertion_curve_AUC",
            "deletion_auc": "deletion_curve_AUC"}
    names = {"deepliftshap": "_DeepLiftShap", "gradcampp": "_GradCAMPlusPlus"}
    for row in got.itertuples():
        assert row.reference == raw[names[row.method]][f"features.{row.layer}"][keys[row.metric]]


def test_fig6_csv_equals_rescaled_rows(tmp_path):
    summary = _summary(r=0.25)
    pdf, png, csv = _outs(tmp_path, "fig6")
    # float32 round trip of r in the summary still matches
    summary.loc[summary["rescale_r"].notna(), "rescale_r"] = float(np.float32(0.25))
    figures.fig6(summary, 0.25, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    expected = summary[summary["rescale_r"].notna()]
    _assert_same_numbers(got, expected, ["method", "layer", "metric"], FIG5_COLS + ["n_clamped"])
    assert set(got["metric"]) == {"ad", "ic"}


# ----------------------------------------------------------------------------------------------- fig7

FIG7_KEYS = ["metric", "layer", "rescaled"]


def test_fig7_csv_equals_paired(tmp_path):
    paired = _paired()
    pdf, png, csv = _outs(tmp_path, "fig7")
    figures.fig7(paired, 0.3, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    expected = paired.assign(rescaled=paired["rescale_r"].notna())
    _assert_same_numbers(got, expected, FIG7_KEYS, ["mean", "ci_low", "ci_high", "n"])
    assert got["name"].tolist() == [f"features.{l}" for l in got["layer"]]


def test_fig7_reversed_pair_is_negated(tmp_path):
    paired = _paired(method_a="deepliftshap", method_b="gradcampp")  # stored as DeepLiftShap - Grad-CAM++
    pdf, png, csv = _outs(tmp_path, "fig7")
    figures.fig7(paired, 0.3, pdf, png, csv, demo=False, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    expected = pd.DataFrame(dict(metric=paired["metric"], layer=paired["layer"],
                                 rescaled=paired["rescale_r"].notna(), mean=-paired["mean"],
                                 ci_low=-paired["ci_high"], ci_high=-paired["ci_low"], n=paired["n"]))
    _assert_same_numbers(got, expected, FIG7_KEYS, ["mean", "ci_low", "ci_high", "n"])


# ------------------------------------------------------------------------------------- load_reference

@needs_reference
def test_load_reference_values():
    ref = figures.load_reference(REFERENCE_JSON)
    assert list(ref.columns) == ["method", "layer", "metric", "rescaled", "value"]
    assert len(ref) == 2 * 21 * 4 * 2
    assert not ref.duplicated(["method", "layer", "metric", "rescaled"]).any()
    assert set(ref["method"]) == set(METHODS) and set(ref["layer"]) == set(range(21))
    raw = json.loads(REFERENCE_JSON.read_text())
    keys = {"ad": "avg_drop", "ic": "increase", "insertion_auc": "insertion_curve_AUC",
            "deletion_auc": "deletion_curve_AUC"}
    names = {"deepliftshap": "_DeepLiftShap", "gradcampp": "_GradCAMPlusPlus"}
    for row in ref.itertuples():
        model = "VGG11_Rescaling" if row.rescaled else "VGG11"
        assert row.value == raw[model][names[row.method]][f"features.{row.layer}"][keys[row.metric]]


def test_load_reference_absent(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="layersweep.figures"):
        assert figures.load_reference(None) is None
        assert figures.load_reference(tmp_path / "nope.json") is None
    assert len(caplog.records) == 2 and "nope.json" in caplog.records[1].getMessage()


def test_load_reference_malformed(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayersweepError, match="bad.json"):
        figures.load_reference(bad)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"VGG11": {"_DeepLiftShap": {"features.0": {"avg_drop": 1.0}}}}))
    with pytest.raises(LayersweepError, match="increase"):
        figures.load_reference(missing)
    layer = tmp_path / "layer.json"
    layer.write_text(json.dumps({"VGG11": {"_DeepLiftShap": {"conv0": {}}}}))
    with pytest.raises(LayersweepError, match="conv0"):
        figures.load_reference(layer)


# ------------------------------------------------------------------------------------ missing input

def _drop(summary, **where):
    mask = np.ones(len(summary), bool)
    for k, v in where.items():
        mask &= (summary[k] == v).to_numpy()
    return summary[~mask]


@pytest.mark.parametrize("case, match", [
    ("fig6_no_r", "rescale_r = 0.5"),
    ("fig5_no_metric", "deletion_auc"),
    ("fig5_unknown_metric", "'accuracy'"),
    ("fig5_hole", "method 'gradcampp', layer 7, metric 'ic'"),
    ("fig5_duplicate", "more than one row"),
    ("fig5_missing_column", "n_constant"),
    ("fig7_no_r", "rescale_r = 0.3"),
    ("fig7_hole", "layer 4"),
    ("fig7_other_pair", "gradcampp minus deepliftshap"),
])
def test_missing_rows_raise_and_write_nothing(tmp_path, case, match):
    summary, paired = _summary(), _paired()
    outs = _outs(tmp_path, "fig")
    with pytest.raises(LayersweepError, match=match):
        if case == "fig6_no_r":
            figures.fig6(summary, 0.5, *outs, demo=False, dpi=DPI)
        elif case == "fig5_no_metric":
            figures.fig5(_drop(summary, metric="deletion_auc"), *outs, demo=False, dpi=DPI)
        elif case == "fig5_unknown_metric":
            extra = summary.iloc[:1].assign(metric="accuracy")
            figures.fig5(pd.concat([summary, extra]), *outs, demo=False, dpi=DPI)
        elif case == "fig5_hole":
            plain_ic = summary[(summary["method"] == "gradcampp") & (summary["layer"] == 7)
                               & (summary["metric"] == "ic") & summary["rescale_r"].isna()]
            figures.fig5(summary.drop(plain_ic.index), *outs, demo=False, dpi=DPI)
        elif case == "fig5_duplicate":
            figures.fig5(pd.concat([summary, summary.iloc[:1]]), *outs, demo=False, dpi=DPI)
        elif case == "fig5_missing_column":
            figures.fig5(summary.drop(columns="n_constant"), *outs, demo=False, dpi=DPI)
        elif case == "fig7_no_r":
            figures.fig7(paired[paired["rescale_r"].isna()], 0.3, *outs, demo=False, dpi=DPI)
        elif case == "fig7_hole":
            hole = paired[(paired["metric"] == "ad") & (paired["layer"] == 4) & paired["rescale_r"].notna()]
            figures.fig7(paired.drop(hole.index), 0.3, *outs, demo=False, dpi=DPI)
        elif case == "fig7_other_pair":
            figures.fig7(paired.assign(method_a="scorecam"), 0.3, *outs, demo=False, dpi=DPI)
    assert _no_files(tmp_path) == []


def test_failed_write_leaves_no_partial_files(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # a file where the CSV's directory should be: the last write cannot start
    with pytest.raises(OSError):
        figures.fig4(None, tmp_path / "fig4.pdf", tmp_path / "fig4.png", blocker / "fig4.csv", demo=False, dpi=DPI)
    assert _no_files(tmp_path) == [blocker]


# ------------------------------------------------------------------------------- what is drawn

def _drawn_points_and_bars(fig):
    """Per axes title: every marker drawn (x, y) and every vertical bar (x, y_low, y_high)."""
    from matplotlib.collections import LineCollection, PathCollection

    out = {}
    for ax in fig.axes:
        points, bars = [], []
        for coll in ax.collections:
            if isinstance(coll, PathCollection):
                points += [tuple(p) for p in coll.get_offsets()]
            elif isinstance(coll, LineCollection):
                bars += [(s[0][0], min(s[0][1], s[1][1]), max(s[0][1], s[1][1])) for s in coll.get_segments()
                         if len(s) == 2 and s[0][0] == s[1][0]]
        for line in ax.lines:
            if line.get_marker() not in (None, "None", "", " "):
                points += list(zip(line.get_xdata(), line.get_ydata()))
        out[ax.get_title()] = (np.array(points, float), np.array(bars, float))
    return out


@pytest.mark.parametrize("fig", ["fig5", "fig6", "fig7"])
def test_drawn_markers_and_bars_are_the_input_numbers(tmp_path, monkeypatch, fig):
    """Not only the CSV: each panel draws, for every method and layer of its metric, one marker at the mean and
    one bar from ci_low to ci_high, at that layer's x (methods and series are offset by less than half a layer)."""
    from matplotlib.figure import Figure

    drawn = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), savefig(self, *a, **k))[1])
    summary, paired = _summary(), _paired()
    outs = _outs(tmp_path, fig)
    if fig == "fig5":
        figures.fig5(summary, *outs, demo=False, dpi=DPI)
        expected, metrics = summary[summary["rescale_r"].isna()], figures.FIG5_METRICS
    elif fig == "fig6":
        figures.fig6(summary, 0.3, *outs, demo=False, dpi=DPI)
        expected, metrics = summary[summary["rescale_r"].notna()], ("ad", "ic")
    else:
        figures.fig7(paired, 0.3, *outs, demo=False, dpi=DPI)
        expected, metrics = paired, ("ad", "ic")
    panels = _drawn_points_and_bars(drawn[0])
    for metric in metrics:
        title = figures.METRICS[metric][0]
        (points, bars), = [v for k, v in panels.items() if k.startswith(title)]  # exactly one panel per metric
        rows = expected[expected["metric"] == metric]
        assert len(points) == len(bars) == len(rows), metric  # nothing drawn twice, nothing else drawn
        for row in rows.itertuples():
            near = np.abs(points[:, 0] - row.layer) < 0.5
            assert np.isclose(points[near, 1], row.mean, rtol=1e-12, atol=0).sum() == 1, (metric, row)
            near = np.abs(bars[:, 0] - row.layer) < 0.5
            hit = np.isclose(bars[near, 1], row.ci_low, rtol=1e-12) & np.isclose(bars[near, 2], row.ci_high, rtol=1e-12)
            assert hit.sum() == 1, (metric, row)


# ------------------------------------------------------------------------------------ many methods

MANY = ("deepliftshap", "liftcam", "gradcampp", "hirescam", "eigencam", "ablationcam", "newcam")  # 5 families


def _drawn_figure(monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), savefig(self, *a, **k))[1])
    return drawn


@pytest.mark.parametrize("fig", ["fig5", "fig6"])
def test_many_methods_small_multiples_by_family(tmp_path, monkeypatch, fig):
    """More than FEW_METHODS methods: one panel per (metric, family); each panel draws exactly its family's
    methods (told apart by colour), one marker at each mean and one bar per CI."""
    from matplotlib.colors import to_rgba

    from layersweep.figures import panels

    drawn = _drawn_figure(monkeypatch)
    summary = _summary(methods=MANY)
    outs = _outs(tmp_path, fig)
    if fig == "fig5":
        figures.fig5(summary, *outs, demo=False, dpi=DPI)
        expected, metrics = summary[summary["rescale_r"].isna()], figures.FIG5_METRICS
    else:
        figures.fig6(summary, 0.3, *outs, demo=False, dpi=DPI)
        expected, metrics = summary[summary["rescale_r"].notna()], ("ad", "ic")
    assert len(MANY) > panels.FEW_METHODS
    groups = style.families(MANY)
    assert list(groups) == ["DeepLift", "gradient CAM", "activation (PCA) CAM", "perturbation", "other"]
    colours = {m: to_rgba(c) for m, c in style.method_colours(MANY).items()}
    assert len(set(colours.values())) == len(MANY)
    panels_by_title = {ax.get_title(): ax for ax in drawn[0].axes if ax.get_title()}
    assert len(panels_by_title) == len(metrics) * len(groups)
    for metric in metrics:
        for family, members in groups.items():
            ax = panels_by_title[f"{figures.METRICS[metric][0]}  ({style.better_direction(metric)})\n{family}"]
            (points, bars), = _drawn_points_and_bars(_FakeFig([ax])).values()
            rows = expected[(expected["metric"] == metric) & expected["method"].isin(members)]
            assert len(points) == len(bars) == len(rows) == 21 * len(members)
            scatter_colours = {tuple(to_rgba(c)) for coll in ax.collections if hasattr(coll, "get_offsets")
                               and len(coll.get_offsets()) for c in coll.get_facecolors()}
            assert scatter_colours == {colours[m] for m in members}
            for row in rows.itertuples():
                near = np.abs(points[:, 0] - row.layer) < 0.5
                assert np.isclose(points[near, 1], row.mean, rtol=1e-12, atol=0).sum() == 1


class _FakeFig:
    def __init__(self, axes):
        self.axes = axes


def test_fig5_draws_only_the_chosen_methods(tmp_path):
    summary = _summary(methods=MANY)
    pdf, png, csv = _outs(tmp_path, "fig5")
    figures.fig5(summary, pdf, png, csv, demo=False, dpi=DPI, methods=["hirescam", "ablationcam"])
    got = _assert_files(pdf, png, csv)
    expected = summary[summary["rescale_r"].isna() & summary["method"].isin(["hirescam", "ablationcam"])]
    _assert_same_numbers(got, expected, ["method", "layer", "metric"], FIG5_COLS)


def test_fig5_unknown_chosen_method_writes_nothing(tmp_path):
    with pytest.raises(LayersweepError, match="no rows for method 'shapcam' .*figures.methods"):
        figures.fig5(_summary(), *_outs(tmp_path, "fig5"), demo=False, dpi=DPI, methods=["gradcampp", "shapcam"])
    assert _no_files(tmp_path) == []


def test_fig7_any_configured_pair(tmp_path):
    paired = _paired(method_a="layercam", method_b="scorecam")
    pdf, png, csv = _outs(tmp_path, "fig7")
    figures.fig7(paired, 0.3, pdf, png, csv, demo=False, dpi=DPI, method_a="scorecam", method_b="layercam")
    got = _assert_files(pdf, png, csv)
    expected = pd.DataFrame(dict(metric=paired["metric"], layer=paired["layer"],
                                 rescaled=paired["rescale_r"].notna(), mean=-paired["mean"],
                                 ci_low=-paired["ci_high"], ci_high=-paired["ci_low"], n=paired["n"]))
    _assert_same_numbers(got, expected, FIG7_KEYS, ["mean", "ci_low", "ci_high", "n"])


def test_config_figure_methods_and_compare():
    from layersweep.config import compare_pair, figure_methods

    cfg = {"attribution": {"methods": ["deepliftshap", "gradcampp", "gradcam"]},
           "figures": {"methods": "all", "compare": ["gradcampp", "deepliftshap"]}}
    assert figure_methods(cfg) == ["deepliftshap", "gradcampp", "gradcam"]
    assert compare_pair(cfg) == ("gradcampp", "deepliftshap")
    cfg["figures"].update(methods=["gradcam"], compare=["gradcam", "gradcampp"])
    assert figure_methods(cfg) == ["gradcam"] and compare_pair(cfg) == ("gradcam", "gradcampp")
    cfg["figures"].update(methods=["scorecam"])
    with pytest.raises(LayersweepError, match="'figures.methods' names 'scorecam'"):
        figure_methods(cfg)
    cfg["figures"].update(compare=["gradcampp", "shapcam"])
    with pytest.raises(LayersweepError, match="'figures.compare' names 'shapcam', which is not in"):
        compare_pair(cfg)


# ------------------------------------------------------------------------------------------- atlas

def _atlas_inputs(seed=5):
    rng = np.random.default_rng(seed)
    n, s = 2, 32
    crops = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    sides = {0: 32, 1: 32, 2: 16, 10: 4, 20: 1, -1: 32}
    maps = {"deepliftshap": {l: rng.normal(size=(n, h, h)) for l, h in sides.items()},
            "gradcampp": {l: rng.uniform(0, 2, size=(n, h, h)) for l, h in sides.items() if l != -1},
            "scorecam": {20: np.zeros((n, 1, 1)), 10: rng.uniform(size=(n, 4, 4))}}
    return crops, ["000005_0", "000009_2"], maps


def test_atlas_draws_every_map_over_its_crop(tmp_path, monkeypatch, specs):
    from matplotlib.image import AxesImage

    from layersweep.figures.style import upsample

    drawn = _drawn_figure(monkeypatch)
    crops, ids, maps = _atlas_inputs()
    pdf, png, csv = _outs(tmp_path, "atlas")
    figures.atlas(crops, ids, maps, pdf, png, csv, demo=True, dpi=DPI, specs=specs, labels=["cat", "dog"])
    got = _assert_files(pdf, png, csv)
    got["crop_id"] = got["crop_id"].astype(str)
    # CSV: one row per given map, by explicit loops
    rows = []
    for i, cid in enumerate(ids):
        for method, per_layer in maps.items():
            for layer, m in per_layer.items():
                rows.append(dict(crop_id=cid, method=method, layer=layer, map_h=m.shape[1], map_w=m.shape[2],
                                 min=m[i].min(), max=m[i].max(), sum=m[i].sum(), abs_max=np.abs(m[i]).max()))
    expected = pd.DataFrame(rows)
    _assert_same_numbers(got, expected, ["crop_id", "method", "layer"], ["map_h", "map_w", "min", "max", "sum",
                                                                        "abs_max"])
    assert set(got.loc[got["layer"] == -1, "name"]) == {"input"}
    # The grid: each (crop, method, layer) cell shows the grey crop and that map, bilinear to 32 x 32, on a
    # scale centred at 0 with limit max |map|; cells of missing layers draw no image.
    cells = {ax.get_label(): ax for ax in drawn[0].axes if ax.get_label().count("|") == 2}
    assert len(cells) == len(rows)
    for i, cid in enumerate(ids):
        gray = crops[i].astype(float) / 255.0 @ np.array([0.299, 0.587, 0.114])
        for method, per_layer in maps.items():
            for layer, m in per_layer.items():
                images = [a for a in cells[f"{cid}|{method}|{layer}"].get_children() if isinstance(a, AxesImage)]
                assert len(images) == 2
                np.testing.assert_allclose(images[0].get_array(), gray, rtol=1e-12)
                up = upsample(m[i], (32, 32))
                np.testing.assert_array_equal(images[1].get_array(), up)
                lim = np.abs(up).max() or 1.0
                assert images[1].get_clim() == (-lim, lim)
    missing = [ax for ax in drawn[0].axes if any(t.get_text() == "not\ncomputed" for t in ax.texts)]
    n_layers = len({l for per in maps.values() for l in per})
    assert len(missing) == len(ids) * (len(maps) * n_layers) - len(rows)


def test_atlas_rejects_bad_maps_and_writes_nothing(tmp_path, specs):
    crops, ids, maps = _atlas_inputs()
    maps["gradcampp"][2] = maps["gradcampp"][2][:1]
    with pytest.raises(LayersweepError, match="method 'gradcampp' at features.2"):
        figures.atlas(crops, ids, maps, *_outs(tmp_path, "atlas"), demo=False, dpi=DPI, specs=specs)
    crops, ids, maps = _atlas_inputs()
    maps["gradcampp"][21] = maps["gradcampp"][20]
    with pytest.raises(LayersweepError, match="layer 21"):
        figures.atlas(crops, ids, maps, *_outs(tmp_path, "atlas"), demo=False, dpi=DPI, specs=specs)
    assert _no_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- fig8

@pytest.fixture
def two_metrics():
    from layersweep.metrics import registry

    registry.register("testpair", columns={"tp_score": "higher", "tp_chance": "none"}, rescaled=False,
                      score=lambda ctx: {}, reference="", definition="")
    registry.register("testloss", columns={"tl_loss": "lower"}, rescaled=True, score=lambda ctx: {},
                      reference="", definition="")
    yield ["testpair", "testloss"]
    registry._REGISTRY.pop("testpair")
    registry._REGISTRY.pop("testloss")


def _metric_summary(methods, columns, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for layer in range(21):
            for metric, rr in [(c, np.nan) for c in columns] + [("tl_loss", 0.3)]:
                mean = rng.uniform(0, 1)
                rows.append(dict(method=method, layer=layer, metric=metric, rescale_r=rr, mean=mean,
                                 ci_low=mean - 0.05, ci_high=mean + 0.05, n=10, n_constant=0, n_clamped=0))
    return pd.DataFrame(rows)


def test_fig8_draws_each_metric_column_and_keeps_the_reference_in_the_csv(tmp_path, two_metrics, monkeypatch):
    columns = ["tp_score", "tp_chance", "tl_loss"]
    summary = pd.concat([_metric_summary(METHODS, ["tp_score", "tp_chance"]),
                         _metric_summary(["gradcampp"], ["tl_loss"])], ignore_index=True)  # testloss: one method only
    summary = summary[~((summary["metric"] == "tl_loss") & (summary["method"] != "gradcampp"))]
    pdf, png, csv = _outs(tmp_path, "fig8")
    figures.fig8(summary, pdf, png, csv, metrics=two_metrics, demo=True, dpi=DPI)
    got = _assert_files(pdf, png, csv)
    _assert_same_numbers(got, summary[summary["rescale_r"].isna()], ["method", "layer", "metric"], FIG5_COLS)
    assert set(got["metric"]) == set(columns)
    assert figures.fig8_columns(two_metrics) == ["tp_score", "tl_loss"]  # "none" columns are not drawn
    assert style.better_direction("tl_loss").startswith("lower")
    assert style.better_direction("tp_chance") == "reference value"
    chance = summary.loc[(summary["metric"] == "tp_chance") & summary["rescale_r"].isna(), "mean"].mean()
    from layersweep.figures import panels
    drawn = []
    real = panels.metric_panel

    def spy(ax, rows, metric, *args, hline=None, **kw):
        drawn.append((metric, hline))
        return real(ax, rows, metric, *args, hline=hline, **kw)

    monkeypatch.setattr(panels, "metric_panel", spy)
    figures.fig8(summary, pdf, png, csv, metrics=two_metrics, demo=False, dpi=DPI)
    assert dict(drawn)["tp_score"][0] == pytest.approx(chance) and dict(drawn)["tl_loss"] is None


def test_fig8_without_metrics_or_with_a_missing_row_writes_nothing(tmp_path, two_metrics):
    pdf, png, csv = _outs(tmp_path, "fig8")
    with pytest.raises(LayersweepError, match="'metrics.compute' lists none"):
        figures.fig8(_metric_summary(METHODS, ["tp_score"]), pdf, png, csv, metrics=[], demo=False, dpi=DPI)
    summary = _metric_summary(METHODS, ["tp_score", "tp_chance", "tl_loss"]).iloc[1:]
    with pytest.raises(LayersweepError, match="no row for method 'deepliftshap', layer 0, metric 'tp_score'"):
        figures.fig8(summary, pdf, png, csv, metrics=two_metrics, demo=False, dpi=DPI)
    assert not any(tmp_path.iterdir())
