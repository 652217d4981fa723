"""The cost model: layer facts against METHODS.md §6 (VGG11, 224 px), per-method totals against the same
table, and the shared passes' forwards against the forwards the engine actually runs (counted)."""
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from layersweep import cost, sizing
from layersweep.attribution import attribute_layers, work
from layersweep.attribution.graph import Graph
from layersweep.attribution.registry import get_method
from layersweep.errors import LayersweepError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# METHODS.md §6, typed from the table: (C_l, H*W, tail share, C_l*tail, HW*tail)
TABLE = [
    (64, 224 ** 2, 0.989, 63.3, 49604), (64, 224 ** 2, 0.989, 63.3, 49604), (64, 112 ** 2, 0.989, 63.3, 12401),
    (128, 112 ** 2, 0.867, 111.0, 10876), (128, 112 ** 2, 0.867, 111.0, 10876), (128, 56 ** 2, 0.867, 111.0, 2719),
    (256, 56 ** 2, 0.745, 190.8, 2338), (256, 56 ** 2, 0.745, 190.8, 2338),
    (256, 56 ** 2, 0.502, 128.6, 1575), (256, 56 ** 2, 0.502, 128.6, 1575), (256, 28 ** 2, 0.502, 128.6, 394),
    (512, 28 ** 2, 0.381, 194.8, 298), (512, 28 ** 2, 0.381, 194.8, 298),
    (512, 28 ** 2, 0.137, 70.3, 108), (512, 28 ** 2, 0.137, 70.3, 108), (512, 14 ** 2, 0.137, 70.3, 27),
    (512, 14 ** 2, 0.077, 39.2, 15), (512, 14 ** 2, 0.077, 39.2, 15),
    (512, 14 ** 2, 0.016, 8.1, 3.1), (512, 14 ** 2, 0.016, 8.1, 3.1), (512, 7 ** 2, 0.016, 8.1, 0.8),
]
KINDS = ["conv", "relu", "maxpool", "conv", "relu", "maxpool", "conv", "relu", "conv", "relu", "maxpool",
         "conv", "relu", "conv", "relu", "maxpool", "conv", "relu", "conv", "relu", "maxpool"]
CONFIG = {"data": {"crop_size": 224}, "model": {}, "device": "cpu",
          "attribution": {"layers": "all", "n_baselines": 8, "batch_size": 16, "max_pairs": 64}}


@pytest.fixture(scope="module")
def vgg11():
    return cost.config_facts(CONFIG)


def test_vgg11_layer_facts_match_the_methods_table(vgg11):
    assert vgg11.total_macs / 1e9 == pytest.approx(7.605, abs=5e-4)  # "total 7.605 GMAC per forward"
    head = vgg11.total_macs * vgg11.layers[-1].tail_share
    assert head / 1e9 == pytest.approx(0.120, abs=5e-4)  # "head 0.120 GMAC with 20 classes"
    assert [f.kind for f in vgg11.layers] == KINDS
    for f, (c, hw, tail, c_tail, hw_tail) in zip(vgg11.layers, TABLE, strict=True):
        assert (f.channels, f.positions) == (c, hw), f.name
        assert round(f.tail_share, 3) == tail, f.name
        assert round(f.channels * f.tail_share, 1) == c_tail, f.name
        assert f.positions * f.tail_share == pytest.approx(hw_tail, abs=0.55 if hw_tail > 10 else 0.05), f.name
    # the Σ row
    assert sum(f.channels for f in vgg11.layers) == 6976
    assert sum(f.positions for f in vgg11.layers) == 158613
    assert round(sum(f.tail_share for f in vgg11.layers), 2) == 9.94
    assert round(sum(f.channels * f.tail_share for f in vgg11.layers)) == 1993
    assert round(sum(f.positions * f.tail_share for f in vgg11.layers)) == 145173
    # groups: a conv and what follows it up to the next conv
    assert [f.group for f in vgg11.layers] == [0, 0, 0, 3, 3, 3, 6, 6, 8, 8, 8, 11, 11, 13, 13, 13, 16, 16, 18, 18, 18]


def _total(fn, facts, options=None, layers=None):
    layers = range(len(facts.layers)) if layers is None else layers
    return sum((fn(facts.layer(l), options or {}) for l in layers), work.ZERO)


def test_perturbation_costs_match_the_methods_table(vgg11):
    """METHODS.md §6, per image over the 21 layers, in forward equivalents."""
    # AblationCAM: 806 grouped (2,752 tail evaluations), 1,993 if every layer ran its own
    assert round(_total(work.tail_per_channel, vgg11).forwards) == 806
    alone = [cost.config_facts(CONFIG, [l]).layer(l) for l in range(21)]
    assert round(sum(work.tail_per_channel(f, {}).forwards for f in alone)) == 1993
    # SHAP-CAM|Π|: 806·|Π| plus the 8 groups' empty coalitions
    groups = {f.group for f in vgg11.layers}
    for n in (1, 10):
        got = _total(work.tail_per_channel_ordering, vgg11, {"orderings": n}).forwards
        assert got == pytest.approx(n * 806.1 + sum(vgg11.layer(g).tail_share for g in groups), rel=2e-4)
    # Shap-CAM: every layer plays its own game (the engine shares nothing within a group, unlike METHODS.md's
    # 80,359·K), so K x the table's HW x tail column: 145,173·K; layers 15-20 only: 27 + 15 + 15 + 3.1 + 3.1 +
    # 0.8 = 64.0·K (METHODS.md's 45.8·K shares the conv/ReLU pairs)
    k = 3
    got = _total(work.tail_per_position_permutation, vgg11, {"permutations": k}).forwards
    assert got / k == pytest.approx(145173, rel=2e-4)
    top = cost.config_facts(CONFIG, range(15, 21))
    got = _total(work.tail_per_position_permutation, top, {"permutations": 100}, range(15, 21)).forwards
    assert got / 100 == pytest.approx(64.0, abs=0.2)  # the table's rounded entries
    # ScoreCAM: 6,976 full forwards
    assert _total(work.full_per_channel, vgg11).forwards == 6976
    # LIFT-CAM: 8 grouped backwards, tail shares summing to 3.71, for both halves
    assert _total(work.grouped_deeplift_backward, vgg11).backwards == pytest.approx(2 * 3.71, abs=0.01)


def test_gradient_and_deeplift_method_costs():
    grad = cost.method_cost("gradcampp", CONFIG["attribution"], CONFIG)
    assert grad.total == work.Work(forwards=1.0, backwards=1.0)  # backward down to features.0
    top = dict(CONFIG["attribution"], layers=[18, 20])
    grad = cost.method_cost("gradcampp", top, CONFIG)
    assert grad.total.backwards == pytest.approx(0.077, abs=5e-4)  # down to features.18: the tail after 17
    dls = cost.method_cost("deepliftshap", CONFIG["attribution"], CONFIG)
    assert dls.total == work.Work(forwards=1 + 8 / 16, backwards=8.0)
    # a method of the activations alone runs no backward; EigenCAM adds one CPU SVD per layer
    eigen = cost.method_cost("eigencam", CONFIG["attribution"], CONFIG).total
    assert (eigen.forwards, eigen.backwards, eigen.n_svds) == (1.0, 0.0, 21)


def test_missing_cost_gets_the_pass_default_and_a_missing_option_is_one_sentence(vgg11):
    @dataclass(frozen=True)
    class Fake:
        name: str = "newperturb"
        pass_kind: str = "perturb"
        cost: object = None

    assert work.method_layer_cost(Fake()) is work.tail_per_channel
    assert work.method_layer_cost(get_method("scorecam")) is work.full_per_channel  # declared in its file
    assert work.method_layer_cost(Fake(name="scorecam", cost=work.no_layer_cost)) is work.no_layer_cost
    assert work.method_layer_cost(get_method("gradcam")) is work.no_layer_cost
    with pytest.raises(LayersweepError, match="no cost"):
        work.method_layer_cost(Fake(pass_kind="unheard"))
    with pytest.raises(LayersweepError, match="'attribution.options.<method>.orderings'"):
        work.tail_per_channel_ordering(vgg11.layer(0), {})


class SmallVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(20, 12), nn.ReLU(), nn.Dropout(), nn.Linear(12, 3))


@pytest.mark.parametrize("method, n_baselines, max_pairs, layers", [
    ("gradcampp", 0, 64, [0, 4, 7]),
    ("eigencam", 0, 64, [1, 6]),
    ("deepliftshap", 4, 64, [0, 4, 7]),    # 3 crops x 4 baselines fit: one forward of crops + baselines
    ("deepliftshap", 4, 8, [2, 5]),        # 2 crops per chunk: baselines forwarded once, crops per chunk
    ("deepliftshap", 5, 2, [3]),           # more baselines than pairs: baselines sliced per crop
])
def test_pass_forwards_equal_the_counted_forwards(monkeypatch, method, n_baselines, max_pairs, layers):
    """Wrap the engine's node evaluator: the MACs it runs forward, per crop, equal the model's forward count."""
    torch.manual_seed(0)
    model = SmallVGG().eval()
    n_crops, size = 3, 12
    facts = cost.network_facts(model, size, layers)
    ran = []
    real = Graph.call

    def counting(self, node, env, **kw):
        out = real(self, node, env, **kw)
        y = out[0] if isinstance(out, tuple) else out
        ran.append(cost.node_macs(node, y) * y.shape[0])
        return out

    monkeypatch.setattr(Graph, "call", counting)
    x, b = torch.randn(n_crops, 3, size, size), torch.randn(max(n_baselines, 1), 3, size, size)
    attribute_layers(model, x, torch.tensor([0, 2, 1]), methods=[method], layers=layers,
                     baselines=b if n_baselines else None, max_pairs=max_pairs)
    counted = sum(ran) / facts.total_macs / n_crops
    attribution = {"n_baselines": n_baselines, "batch_size": n_crops, "max_pairs": max_pairs}
    predicted = work.pass_work(get_method(method), facts, layers, attribution)
    assert counted == pytest.approx(predicted.forwards, rel=1e-12)


def test_measured_seconds_turn_work_into_time():
    model = SmallVGG().eval()
    s = cost.measure_seconds(model, 16, "cpu", batch=2, repeats=2)
    assert s.forward > 0 and s.backward > 0
    assert s.of(work.Work(3, 2)) == pytest.approx(3 * s.forward + 2 * s.backward)


def test_resources_scale_with_the_method():
    cfg = dict(CONFIG, attribution=dict(CONFIG["attribution"], methods=["gradcampp", "deepliftshap"]))
    grad, dls = (sizing.attribution_runtime_min(m, cfg, 64) for m in ("gradcampp", "deepliftshap"))
    fwd = cost.assumed_seconds(cost.config_facts(cfg), "cpu").forward
    assert grad == math.ceil(10 + 2 * 64 * 3 * fwd / 60)  # 1 forward + 1 backward (= 2 forwards)
    assert dls == math.ceil(10 + 2 * 64 * (1.5 + 16) * fwd / 60)
    mem = {m: sizing.attribution_memory_mb(m, cfg) for m in ("gradcampp", "deepliftshap")}
    act_mb = cost.config_facts(cfg).activation_floats * 4 / 1e6
    assert mem["deepliftshap"] - mem["gradcampp"] == pytest.approx(3 * act_mb * (64 - 16), abs=1)


def test_cost_table_rows_add_up():
    cfg = dict(CONFIG, attribution=dict(CONFIG["attribution"], layers=[0, 5, 20]))
    seconds = cost.Seconds(forward=0.1, backward=0.2)
    table = cost.cost_table(["gradcampp", "deepliftshap"], cfg, 1024, seconds)
    assert list(table.columns) == list(cost.COST_COLUMNS)
    for method, part in table.groupby("method"):
        assert part["layer"].tolist() == ["pass", "0", "5", "20", "total"]
        total, rest = part[part["layer"] == "total"].iloc[0], part[part["layer"] != "total"]
        assert total["forwards"] == pytest.approx(rest["forwards"].sum())
        assert total["backwards"] == pytest.approx(rest["backwards"].sum())
        assert total["seconds_per_crop"] == pytest.approx(0.1 * total["forwards"] + 0.2 * total["backwards"])
        assert total["total_hours"] == pytest.approx(total["seconds_per_crop"] * 1024 / 3600)
    dls = table[(table["method"] == "deepliftshap") & (table["layer"] == "total")].iloc[0]
    assert (dls["forwards"], dls["backwards"]) == (1.5, 8.0)  # 1 + 8 baselines / 16 per batch; 8 backwards


def test_batchnorm_archs_have_facts_and_the_same_conv_work():
    """A _bn arch is built in eval mode (the engine refuses training-mode BatchNorm); BatchNorm adds no MACs."""
    plain = cost.config_facts({"model": {"arch": "vgg11"}, "data": {"crop_size": 64}})
    bn = cost.config_facts({"model": {"arch": "vgg11_bn"}, "data": {"crop_size": 64}})
    assert len(plain.layers) == 21 and len(bn.layers) == 29
    assert [f.kind for f in bn.layers[:4]] == ["conv", "batchnorm", "relu", "maxpool"]
    assert bn.total_macs == plain.total_macs


def test_metric_cost_counts_forwards_per_map_and_attribution_passes():
    from layersweep.metrics import registry

    registry.register("testcost", columns={"tc": "lower"}, rescaled=False, score=lambda ctx: {}, reference="",
                      definition="", cost=lambda opts, n_layers: {"forwards_per_map": 2 * opts["k"],
                                                                  "attribution_passes_per_crop": n_layers},
                      options={"k": registry.int_option(4, 1, 10)})
    try:
        config = dict(CONFIG, attribution=dict(CONFIG["attribution"], layers=[0, 5, 20], options={}))
        gradcampp = cost.method_cost("gradcampp", config["attribution"], config).total
        scoring = cost.metric_work("testcost", {"k": 4}, "gradcampp", config)
        assert scoring.forwards == pytest.approx(8 * 3 + 3 * gradcampp.forwards)  # 8 forwards x 3 maps + 3 passes (one per layer)
        assert scoring.backwards == pytest.approx(3 * gradcampp.backwards)
        table = cost.cost_table(["gradcampp"], config, 10, cost.Seconds(0.5, 1.0, "test"),
                                metrics={"testcost": {"k": 4}})
        row = table[table["pass_kind"] == "metric testcost"].iloc[0]
        assert row["total_seconds"] == pytest.approx(10 * (0.5 * scoring.forwards + 1.0 * scoring.backwards))
    finally:
        registry._REGISTRY.pop("testcost")


def test_eigen_methods_count_one_svd_of_each_layer(vgg11):
    """EigenCAM, EigenGradCAM, SegEigenCAM: one (H*W, C) SVD per crop and layer, none for other methods."""
    for method in ("eigencam", "eigengradcam", "segeigencam"):
        mc = cost.method_cost(method, dict(CONFIG["attribution"], layers=[0, 1, 20]), CONFIG)
        assert mc.total.svds == (((49, 512), 1), ((224 * 224, 64), 2))  # features.20: 7 x 7 x 512
        assert [w.n_svds for w in mc.per_layer.values()] == [1, 1, 1]
    for method in ("gradcam", "deepliftshap", "ablationcam", "shapcam"):
        assert cost.method_cost(method, CONFIG["attribution"], CONFIG).total.svds == ()
    # work adds and scales SVD counts per shape
    w = work.Work(1, 0, (((4, 2), 1),)) + work.Work(0, 1, (((4, 2), 2), ((9, 3), 1)))
    assert w == work.Work(1, 1, (((4, 2), 3), ((9, 3), 1))) and (w * 2).svds == (((4, 2), 6), ((9, 3), 2))


def test_seconds_price_the_svds_measured_or_by_their_flops():
    s = cost.Seconds(forward=0.1, backward=0.2, svd={(100, 10): 0.05})
    svds = work.Work(2, 1, (((100, 10), 3), ((50, 20), 2)))
    unmeasured = (6 * 50 * 20 ** 2 + 20 * 20 ** 3) / (cost.ASSUMED_SVD_GFLOP_PER_S * 1e9)
    assert work.svd_flops(50, 20) == work.svd_flops(20, 50) == 6 * 50 * 20 ** 2 + 20 * 20 ** 3
    assert s.of(svds) == pytest.approx(2 * 0.1 + 0.2 + 3 * 0.05 + 2 * unmeasured, rel=1e-12)
    # the SLURM runtime counts them too
    cfg = dict(CONFIG, attribution=dict(CONFIG["attribution"], layers=[0, 1]))
    grad, eigen = (sizing.attribution_runtime_min(m, cfg, 64) for m in ("gradcam", "eigencam"))
    svd_s = 2 * work.svd_flops(224 * 224, 64) / (cost.ASSUMED_SVD_GFLOP_PER_S * 1e9)
    fwd = cost.assumed_seconds(cost.config_facts(cfg), "cpu").forward
    assert eigen == math.ceil(10 + 2 * 64 * (fwd + svd_s) / 60) and eigen > grad


def test_measured_svd_seconds_time_numpys_svd_of_each_shape_per_crop(monkeypatch):
    """measure_svd_seconds runs numpy's reduced SVD of a float32 matrix of each distinct shape on one BLAS
    thread (as methods._cam does), takes the median of the repeats and divides by the parallel crops. A fake
    clock: each SVD of an (m, n) matrix 'takes' m * n microseconds, the third repeat twice as long."""
    import threadpoolctl

    import numpy as np

    clock = [0.0]
    calls = []
    real_svd = np.linalg.svd

    def fake_svd(x, full_matrices=True):
        blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        calls.append((x.shape, x.dtype.name, full_matrices, set(blas)))
        n_same = sum(c[0] == x.shape for c in calls)
        clock[0] += x.shape[0] * x.shape[1] * 1e-6 * (2 if n_same == 3 else 1)
        return real_svd(x[:4, :2], full_matrices=False)

    monkeypatch.setattr("numpy.linalg.svd", fake_svd)
    monkeypatch.setattr(cost.time, "perf_counter", lambda: clock[0])
    out = cost.measure_svd_seconds([(300, 20), (40, 5), (300, 20)], workers=2, repeats=3)
    assert sorted(out) == [(40, 5), (300, 20)]
    assert out[(300, 20)] == pytest.approx(300 * 20 * 1e-6 / 2) and out[(40, 5)] == pytest.approx(40 * 5e-6 / 2)
    assert sorted({c[0] for c in calls}) == [(40, 5), (300, 20)] and len(calls) == 6
    assert all(c[1] == "float32" and c[2] is False and c[3] == {1} for c in calls)


@pytest.mark.parametrize("method", ["eigencam", "eigengradcam", "segeigencam"])
def test_svds_forecast_equal_the_svds_the_engine_runs(monkeypatch, method):
    """Count the SVDs the engine runs (numpy's, in methods._cam) against the cost model's, shape by shape."""
    import numpy as np

    from layersweep.attribution.methods import _cam

    torch.manual_seed(0)
    model = SmallVGG().eval()
    layers, n_crops, size = [0, 2, 4, 7], 3, 12
    facts = cost.network_facts(model, size, layers)
    ran = {}
    real = np.linalg.svd

    def counting(x, *args, **kw):
        ran[x.shape] = ran.get(x.shape, 0) + 1
        return real(x, *args, **kw)

    monkeypatch.setattr(_cam.np.linalg, "svd", counting)
    attribute_layers(model, torch.randn(n_crops, 3, size, size), torch.tensor([0, 2, 1]), methods=[method],
                     layers=layers)
    predicted = sum((get_method(method).cost(facts.layer(l), {}) for l in layers), work.ZERO) * n_crops
    assert dict(predicted.svds) == ran == {(144, 4): 3, (36, 4): 3, (36, 6): 3, (9, 5): 3}  # 3 crops x 4 layers


def test_the_attribution_package_does_not_import_the_cost_model():
    """The work the methods declare lives beside them (attribution/work.py): no arrow points up to cost.py."""
    import ast
    from pathlib import Path

    for path in (Path(cost.__file__).parent / "attribution").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("cost" in n.split(".") for n in names), (path, names)
