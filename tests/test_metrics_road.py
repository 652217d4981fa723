"""ROAD against pytorch-grad-cam 1.5.7 (`metrics/road.py`): percentile thresholds, masks, the noisy linear
imputation itself, and ROADMostRelevantFirst / ROADLeastRelevantFirst / ROADCombined on the same maps, noise
included (the same seeded draws)."""
import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import (NoisyLinearImputer, ROADCombined, ROADLeastRelevantFirst,
                                           ROADMostRelevantFirst)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from layersweep.errors import LayersweepError
from layersweep.metrics.road import (LERF, MORF, noisy_linear_impute, numpy_percentiles, road_keep_masks,
                                     road_scores)

pytestmark = pytest.mark.usefixtures("one_thread")
H, W = 12, 17  # non-square
PERCENTILES = [20, 40, 60, 80]


def tiny_net(seed=0):
    """A small conv net with random non-zero biases; its softmax spread so imputations move the scores."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(32, 10))
    with torch.no_grad():
        for m in net:
            if hasattr(m, "bias") and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
        net[-1].weight.mul_(6.0)
    return net.eval()


def minmax(m):
    lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo)


def sample_maps(n, seed, zeros=False):
    """Smooth-ish maps (upsampled coarse noise), optionally ReLU'd so that many pixels tie at 0."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 5, generator=g) - (0.45 if zeros else 0.0)
    m = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    return minmax(m.clamp_min(0) if zeros else m).float()


def test_percentiles_are_numpys_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    ps = [1, 12.5, 20, 33, 40, 50, 60, 80, 99]
    for trial in range(60):
        n = int(torch.randint(2, 400, (1,), generator=g))
        v = torch.rand(4, n, generator=g)
        if trial % 2:
            v = torch.floor(v * 6) / 6  # ties
        mine = numpy_percentiles(v, ps).numpy()
        ref = np.array([[np.percentile(row, p) for p in ps] for row in v.numpy()], dtype=np.float32)
        np.testing.assert_array_equal(mine, ref)


class _Recorder:
    """An 'imputer' that keeps the binary mask pytorch-grad-cam hands it."""

    def __call__(self, img, mask):
        self.mask = mask
        return img


@pytest.mark.parametrize("zeros", [False, True])
def test_masks_equal_pytorch_grad_cams(zeros):
    maps = sample_maps(5, seed=1, zeros=zeros)
    keep = road_keep_masks(maps, PERCENTILES)
    assert keep.shape == (5, 2, 4, H, W)
    for m in range(5):
        for j, p in enumerate(PERCENTILES):
            for side, cls in ((LERF, RemoveLeastRelevantFirst), (MORF, RemoveMostRelevantFirst)):
                rec = _Recorder()
                cls(p, rec)(None, maps[m])
                assert torch.equal(rec.mask.bool(), keep[m, side, j]), (m, p, side)
    if zeros:  # ReLU'd maps: MoRF at 20 % keeps nothing for some map (its 20th percentile is its minimum 0)
        assert (~keep[:, MORF, 0].flatten(1).any(dim=1)).any()


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_imputation_equals_noisy_linear_imputer(solver):
    g = torch.Generator().manual_seed(3)
    img = torch.randn(5, 3, H, W, generator=g)
    keep = torch.rand(5, H, W, generator=g) > 0.5
    keep[1] = sample_maps(1, seed=4)[0] < 0.6   # one large connected hole
    keep[2] = False                              # nothing kept: pytorch-grad-cam returns 0
    keep[3] = True
    keep[3, 4, 5] = False                        # one pixel: the mean of its 8 neighbours
    ref = torch.stack([NoisyLinearImputer(noise=0.0)(img[i], keep[i].float()) for i in range(5)])
    out = noisy_linear_impute(img, keep, noise=0.0, solver=solver)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert torch.equal(out[keep[:, None].expand_as(out)], img[keep[:, None].expand_as(img)])  # kept pixels: x
    assert torch.all(out[2] == 0)
    w = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    torch.testing.assert_close(out[3, :, 4, 5], (img[3, :, 3:6, 4:7] * w).sum(dim=(1, 2)))


def test_imputation_noise_is_pytorch_grad_cams_draw():
    g = torch.Generator().manual_seed(5)
    img = torch.randn(2, 3, H, W, generator=g)
    keep = torch.rand(2, H, W, generator=g) > 0.4
    torch.manual_seed(11)
    ref = torch.stack([NoisyLinearImputer()(img[i], keep[i].float()) for i in range(2)])  # noise 0.01, global RNG
    shared = torch.Generator().manual_seed(11)
    out = noisy_linear_impute(img, keep, noise=0.01, generators=[shared, shared], solver="direct")
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    clean = noisy_linear_impute(img, keep, noise=0.0, solver="direct")
    resid = (out - clean)[~keep[:, None].expand_as(out)]
    assert 0.006 < float(resid.std()) < 0.014 and bool(torch.all((out - clean)[keep[:, None].expand_as(out)] == 0))


def _pgc_scores(net, x, maps, targets, cls, seed, **kw):
    torch.manual_seed(seed)
    tg = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    return np.asarray(cls(**kw)(x, maps.numpy(), tg, net), dtype=float)


def test_road_equals_pytorch_grad_cam_per_map_with_noise():
    """Each map alone through pytorch-grad-cam, its global RNG seeded as the map's generator: the same noise.
    The tolerance (1e-6; the two differ by float32 round-off only) is far below the noise's effect on the
    scores (up to ~3e-4 here): another draw fails. (pytorch-grad-cam's imputer cannot take float64 inputs.)"""
    net = tiny_net()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, H, W, generator=g)
    targets = torch.tensor([2, 5, 9])
    maps = torch.cat([sample_maps(3, seed=8), sample_maps(3, seed=9, zeros=True)])
    ci = torch.tensor([0, 1, 2, 0, 1, 2])
    seeds = [101 + m for m in range(6)]

    def ours(seed_of):
        return road_scores(net, x, maps, targets, crop_index=ci, percentiles=PERCENTILES, noise=0.01,
                           generators=[torch.Generator().manual_seed(seed_of(m)) for m in range(6)],
                           solver="direct", batch_size=5)

    res = ours(lambda m: seeds[m])
    with torch.no_grad():
        Y = torch.softmax(net(x), dim=1)[torch.arange(3), targets]
    combined = np.zeros(6)
    for m in range(6):
        c = int(ci[m])
        xi, mi, ti = x[c:c + 1], maps[m:m + 1], targets[c:c + 1]
        combined[m] = _pgc_scores(net, xi, mi, ti, ROADCombined, seeds[m], percentiles=PERCENTILES)[0]
        # single percentiles: start pytorch-grad-cam's RNG where this mask's draw starts in the map's sequence
        gen = torch.Generator().manual_seed(seeds[m])
        for side, cls in ((LERF, ROADLeastRelevantFirst), (MORF, ROADMostRelevantFirst)):
            for j, p in enumerate(PERCENTILES):
                torch.set_rng_state(gen.get_state())
                single = np.asarray(cls(percentile=p)(xi, mi.numpy(), [ClassifierOutputSoftmaxTarget(int(ti))], net))
                mine = (res["morf_scores"] if side == MORF else res["lerf_scores"])[m, j] - Y[c]
                assert mine.item() == pytest.approx(float(single[0]), abs=1e-6), (m, side, p)
                k = int((~road_keep_masks(mi, [p])[0, side, 0]).sum())
                torch.randn((3, k), generator=gen)  # advance past this mask's draw
    np.testing.assert_allclose(res["road_combined"].numpy(), combined, atol=1e-6, rtol=0)
    other = ours(lambda m: seeds[m] + 1000)["road_combined"].numpy()
    assert np.abs(other - combined).max() > 1e-5  # the noise matters at this tolerance
    torch.testing.assert_close(res["road_combined"], (res["road_lerf"] - res["road_morf"]) / 2)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_road_equals_pytorch_grad_cam_batched_without_noise(monkeypatch, solver):
    """Several crops in one pytorch-grad-cam call (noise switched off there), against batches that cut across
    crops and maps here."""
    monkeypatch.setattr(pgc_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, pgc_road.neighbors_weights))
    net = tiny_net(seed=2)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 3, H, W, generator=g)
    targets = torch.tensor([0, 3, 3, 8])
    maps = sample_maps(4, seed=13, zeros=True)
    res = road_scores(net, x, maps, targets, percentiles=[10, 45, 90], noise=0.0, solver=solver, batch_size=4)
    tg = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    morf = pgc_road.ROADMostRelevantFirstAverage(percentiles=[10, 45, 90])
    lerf = pgc_road.ROADLeastRelevantFirstAverage(percentiles=[10, 45, 90])
    combined = ROADCombined(percentiles=[10, 45, 90])
    np.testing.assert_allclose(res["road_morf"].numpy(), morf(x, maps.numpy(), tg, net), atol=1e-4, rtol=0)
    np.testing.assert_allclose(res["road_lerf"].numpy(), lerf(x, maps.numpy(), tg, net), atol=1e-4, rtol=0)
    np.testing.assert_allclose(res["road_combined"].numpy(), combined(x, maps.numpy(), tg, net), atol=1e-4, rtol=0)


def test_a_maps_value_depends_on_its_own_generator_only():
    net = tiny_net(seed=4)
    g = torch.Generator().manual_seed(20)
    x = torch.randn(3, 3, H, W, generator=g)
    targets = torch.tensor([1, 2, 3])
    maps = sample_maps(6, seed=21)
    ci = torch.tensor([0, 1, 2, 2, 1, 0])

    def run(sel, batch_size):
        gens = [torch.Generator().manual_seed(500 + m) for m in sel]
        return road_scores(net, x, maps[sel], targets, crop_index=ci[sel], noise=0.01, generators=gens,
                           solver="direct", batch_size=batch_size)["road_combined"]

    full = run(list(range(6)), 7)
    torch.testing.assert_close(run([4, 1], 3), full[[4, 1]], atol=1e-6, rtol=0)
    torch.testing.assert_close(run(list(range(6)), 64), full, atol=1e-6, rtol=0)


def test_bad_options_give_one_sentence():
    net = tiny_net()
    x = torch.zeros(1, 3, H, W)
    maps = sample_maps(1, seed=1)
    for kw, word in (({"percentiles": [0, 50]}, "percentiles"), ({"percentiles": []}, "percentiles"),
                     ({"noise": -1.0}, "noise"), ({"solver": "lu"}, "solver")):
        with pytest.raises(LayersweepError, match=word):
            road_scores(net, x, maps, [0], **{"noise": 0.0, **kw})
    with pytest.raises(LayersweepError, match="generator"):
        road_scores(net, x, maps, [0], noise=0.01)
    with pytest.raises(LayersweepError, match="size"):
        road_scores(net, x, maps[:, :5], [0], noise=0.0)


# ---------------------------------------------------------------------------------------------------------------
# the registered metric (metrics/road.py) through score_metric_shard
# ---------------------------------------------------------------------------------------------------------------
def test_registered_road_equals_pytorch_grad_cam_on_every_row(tmp_path):
    """Each row against ROADCombined on the same normalised map, pytorch-grad-cam's RNG seeded as the (crop,
    layer) generator the metric draws the map's noise from."""
    from types import SimpleNamespace

    from layersweep.metrics.metric_shard import MetricContext, score_metric_shard
    from layersweep.metrics.registry import get_metric
    from layersweep.metrics import normalize_maps
    from layersweep.preprocess import to_model_input

    from test_metrics_shard import LAYERS, N, SIZE, make_crops, tiny_model, write_shard

    path, arrays = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    opts = {"percentiles": [30, 70], "solver": "direct"}
    df = score_metric_shard("road", model, crops, path, options=opts, seed=3, batch_size=7, device="cpu",
                            progress=False)
    assert list(df["layer"]) == [l for l in LAYERS for _ in range(N)]
    x = to_model_input(crops)
    ctx = SimpleNamespace(seed=3, crop_ids=list(arrays["crop_id"]), name="road", device=torch.device("cpu"))
    for row in df.itertuples():
        i = list(arrays["crop_id"]).index(row.crop_id)
        if row.layer == 5 and row.crop_id == "b":
            assert row.constant and np.isnan(row.road_morf) and np.isnan(row.road_combined)
            continue
        maps01 = normalize_maps(torch.from_numpy(arrays[f"map_{row.layer}"][i:i + 1].astype(np.float32)),
                                (SIZE, SIZE))[0]
        seed = MetricContext.crop_generator(ctx, i, f"layer {row.layer}").initial_seed()
        tg = [ClassifierOutputSoftmaxTarget(int(row.target))]
        torch.manual_seed(seed)
        ref = ROADCombined(percentiles=[30, 70])(x[i:i + 1], maps01.numpy(), tg, model)
        assert row.road_combined == pytest.approx(float(ref[0]), abs=1e-4)
        torch.manual_seed(seed)  # LeRF is drawn first: MoRF's draws start after the LeRF masks'
        lerf = pgc_road.ROADLeastRelevantFirstAverage(percentiles=[30, 70])(x[i:i + 1], maps01.numpy(), tg, model)
        morf = pgc_road.ROADMostRelevantFirstAverage(percentiles=[30, 70])(x[i:i + 1], maps01.numpy(), tg, model)
        assert row.road_lerf == pytest.approx(float(lerf[0]), abs=1e-4)
        assert row.road_morf == pytest.approx(float(morf[0]), abs=1e-4)
    metric = get_metric("road")
    assert not metric.rescaled and metric.columns["road_morf"] == "lower"
    assert metric.cost(metric.options, 21) == {"forwards_per_map": 8, "attribution_passes_per_crop": 0}
    with pytest.raises(LayersweepError, match="rescaled"):
        score_metric_shard("road", model, crops, path, r=0.3, device="cpu", progress=False)
    with pytest.raises(LayersweepError, match="solver"):
        score_metric_shard("road", model, crops, path, options={"solver": "lu"}, device="cpu", progress=False)
