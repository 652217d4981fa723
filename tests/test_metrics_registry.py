"""The metric registry and `score_metric_shard`, with a metric registered by this test (the real ones have their
own tests): rows, constant maps, the rescaled variant, per-crop seeding and the one-sentence config errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layersweep.errors import LayersweepError
from layersweep.metrics import registry
from layersweep.metrics.metric_shard import score_metric_shard
from layersweep.metrics.registry import check_compute, float_option, metric_options, register

from test_metrics_shard import LAYERS, N, SIZE, make_crops, tiny_model, write_shard

KW = dict(batch_size=7, constant_eps=1e-6, device="cpu", progress=False)


def _score(ctx):
    """Mean of each normalised map, and one seeded uniform draw per crop."""
    mass = torch.full((len(ctx.layers) * ctx.n,), float("nan"))
    for maps01, _, rows in ctx.groups():
        mass[rows] = maps01.double().mean(dim=(1, 2)).float()
    draw = torch.tensor([torch.rand(1, generator=ctx.crop_generator(i)).item() for i in range(ctx.n)])
    return {"mass": mass, "draw": draw.repeat(len(ctx.layers)), "chance": torch.zeros(len(ctx.layers) * ctx.n)}


@pytest.fixture
def mass_metric():
    register("testmass", columns={"mass": "higher", "draw": "none", "chance": "none"}, needs=("forwards",),
             rescaled=True, score=_score, reference="this test", definition="mean of the normalised map",
             options={"scale": float_option(1.0, 0.0, 10.0, open_low=True)})
    yield "testmass"
    registry._REGISTRY.pop("testmass")


def naive_minmax(m, size):
    up = F.interpolate(torch.as_tensor(m, dtype=torch.float64)[None, None], size=size, mode="bilinear",
                       align_corners=False)[0, 0]
    return (up - up.min()) / (up.max() - up.min())


def test_rows_hold_the_metric_of_each_map_and_nan_for_constant_maps(tmp_path, mass_metric):
    path, arrays = write_shard(tmp_path / "s.npz")
    df = score_metric_shard(mass_metric, tiny_model(), make_crops(), path, **KW)
    assert list(df.columns[:5]) == ["crop_id", "method", "layer", "target", "score"]
    assert list(df["layer"]) == [l for l in LAYERS for _ in range(N)]  # layer-major
    for row in df.itertuples():
        m = arrays[f"map_{row.layer}"][list(arrays["crop_id"]).index(row.crop_id)].astype(np.float64)
        if row.layer == 5 and row.crop_id == "b":
            assert row.constant and np.isnan(row.mass) and np.isnan(row.draw)
        else:
            assert not row.constant
            assert row.mass == pytest.approx(naive_minmax(m, (SIZE, SIZE)).mean().item(), abs=1e-6)
    assert df["score"].between(0, 1).all()


def test_rescaled_maps_have_mean_r(tmp_path, mass_metric):
    path, _ = write_shard(tmp_path / "s.npz")
    df = score_metric_shard(mass_metric, tiny_model(), make_crops(), path, r=0.3, rtol=1e-6, **KW)
    assert (df["r"] == 0.3).all()
    ok = ~df["constant"]
    np.testing.assert_allclose(df.loc[ok, "mass"], 0.3, rtol=1e-4)  # sum S^p = r*H*W  <=>  mean = r


def test_a_crop_draws_the_same_values_whatever_its_shard_mates(tmp_path, mass_metric):
    path, arrays = write_shard(tmp_path / "s.npz")
    full = score_metric_shard(mass_metric, tiny_model(), make_crops(), path, seed=3, **KW)
    sub = {k: v for k, v in arrays.items()}
    sub["crop_id"] = np.array(["c", "a", "b"])  # same ids, other order: other rows of the shard
    for k in ("target", "logit", "prob"):
        sub[k] = arrays[k][[2, 0, 1]]
    for layer in LAYERS:
        sub[f"map_{layer}"] = arrays[f"map_{layer}"][[2, 0, 1]]
    other = score_metric_shard(mass_metric, tiny_model(), make_crops()[[2, 0, 1]], sub, seed=3, **KW)
    a = full.set_index(["crop_id", "layer"]).sort_index()
    b = other.set_index(["crop_id", "layer"]).sort_index()
    np.testing.assert_allclose(a["draw"], b["draw"])
    np.testing.assert_allclose(a["mass"], b["mass"], atol=1e-6)
    reseeded = score_metric_shard(mass_metric, tiny_model(), make_crops(), path, seed=4, **KW)
    assert not np.allclose(full["draw"].dropna(), reseeded["draw"].dropna())


def test_options_are_checked_with_one_sentence(mass_metric):
    assert metric_options(mass_metric, {"scale": 2.0}) == {"scale": 2.0}
    with pytest.raises(LayersweepError, match=r"'metrics.options.testmass.scale' is 0; it must be a number in \(0, 10\]"):
        metric_options(mass_metric, {"scale": 0})
    with pytest.raises(LayersweepError, match="'metrics.options.testmass.bogus' is not an option"):
        metric_options(mass_metric, {"bogus": 1})


def test_compute_list_is_checked(mass_metric):
    assert check_compute(["core"], {}, "crops") == ["core"]
    assert check_compute([mass_metric], {mass_metric: {"scale": 3}}, "crops") == ["core", mass_metric]  # core: always
    with pytest.raises(LayersweepError, match="unknown metric 'roadd' in config key 'metrics.compute'"):
        check_compute(["core", "roadd"], {}, "crops")
    with pytest.raises(LayersweepError, match="unknown metric 'ad' in config key 'metrics.compute' \\('ad' is a column "
                                              "of metric 'core': list 'core'\\)"):
        check_compute(["ad"], {}, "crops")
    with pytest.raises(LayersweepError, match="config key 'metrics.options.nosuch' names no metric"):
        check_compute(["core"], {"nosuch": {}}, "crops")
    with pytest.raises(LayersweepError, match="config key 'metrics.options.core': the options of metric 'core' are "
                                              "the keys metrics.curve_points"):
        check_compute(["core"], {"core": {"curve_points": 5}}, "crops")


def test_a_metric_that_needs_boxes_is_refused_in_crop_mode(mass_metric):
    register("testboxes", columns={"inside": "higher"}, needs=("boxes",), rescaled=False,
             score=lambda ctx: {}, reference="", definition="")
    try:
        with pytest.raises(LayersweepError, match="metric 'testboxes' in 'metrics.compute' needs object boxes.*data.samples: images"):
            check_compute(["testboxes"], {}, "crops")
        assert check_compute(["testboxes"], {}, "images") == ["core", "testboxes"]
    finally:
        registry._REGISTRY.pop("testboxes")


def test_rescaled_scoring_of_a_rank_only_metric_is_refused(tmp_path):
    register("testrank", columns={"rank": "higher"}, needs=("forwards",), rescaled=False,
             score=lambda ctx: {}, reference="", definition="")
    try:
        path, _ = write_shard(tmp_path / "s.npz")
        with pytest.raises(LayersweepError, match="metric 'testrank' does not depend on map values"):
            score_metric_shard("testrank", tiny_model(), make_crops(), path, r=0.3, **KW)
    finally:
        registry._REGISTRY.pop("testrank")


def test_registering_a_report_metric_name_or_a_taken_column_fails(mass_metric):
    with pytest.raises(ValueError, match="reuses a name of the report's metrics"):
        register("ad", columns={"x": "higher"}, rescaled=False, score=_score, reference="", definition="")
    with pytest.raises(ValueError, match="column 'mass' is already a column of metric 'testmass'"):
        register("other", columns={"mass": "higher"}, rescaled=False, score=_score, reference="", definition="")


def test_every_registered_metric_and_column_is_documented():
    """docs/metrics.md has a section per metric file and names each column (docs/metrics.md, "How to add")."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    for name in registry.available_metrics():
        assert f"\n### {name}" in doc, f"docs/metrics.md has no section '### {name}'"
        assert f"`layersweep/metrics/{name}.py`" in doc
        for column in registry.get_metric(name).columns:
            assert f"`{column}`" in doc, f"docs/metrics.md does not name column {column!r} of metric {name!r}"


def test_metric_figure_and_table_modules_import_no_private_name():
    """The helpers the metric files share are public (layersweep/metrics/batching.py): no module of metrics/,
    figures/, tables/ or scripts/ imports a `_name` from another module."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("layersweep/metrics", "layersweep/figures", "layersweep/tables", "scripts"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{path.relative_to(root)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found
