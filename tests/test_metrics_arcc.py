"""ARCC (layersweep/metrics/arcc.py) against pytorch-grad-cam 1.5.7's `metrics.arcc.ARCC` on the same maps, with
RefineCAM and Grad-CAM++ as the explained method, ROAD's noise seeded as in tests/test_metrics_road.py (the
library's global RNG seeded as the map's generator); the combination and the registered metric."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.vgg import VGG, make_layers

import pytorch_grad_cam as pgc
from pytorch_grad_cam.metrics.arcc import ARCC
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from layersweep.attribution import attribute_layers
from layersweep.errors import LayersweepError
from layersweep.metrics import normalize_maps
from layersweep.metrics.arcc import arcc_combine, arcc_scores, rescale_road

pytestmark = pytest.mark.usefixtures("one_thread")
SCALE, BIAS = 4.0, 0.05  # a random net whose softmax moves with the input (ROAD > 0 for some maps)
POOLS = [20, 15, 10, 5]
H, W = 40, 56  # non-square; features.20 is 1 x 1 (not used below), features.15 2 x 3


def narrow_vgg11(seed=1):
    """VGG11's layout (pools at features.5, 10, 15, 20) with 4..32 channels, random non-zero biases, float32 (the
    library's ROAD imputer takes float32 only)."""
    torch.manual_seed(seed)
    model = VGG(make_layers([4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]), init_weights=True)
    model.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 7))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, BIAS)
        model.classifier[-1].weight.mul_(SCALE)
    model.eval()
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model, ref


class LogitTargets:
    """ARCC's `base_method`: ARCC hands it the softmax targets its ROAD needs; the CAM explains the target logit
    (as the engine does), so the targets are swapped for ClassifierOutputTarget of the same class."""

    def __init__(self, cam):
        self.cam = cam

    def __call__(self, input_tensor, targets):
        return self.cam(input_tensor, [ClassifierOutputTarget(t.category) for t in targets])


@pytest.mark.parametrize("method, layers, scored", [("refinecam", [15, 10, 5], 5), ("gradcampp", [10], 10)])
def test_arcc_equals_pytorch_grad_cams_per_map(method, layers, scored):
    model, ref = narrow_vgg11()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, H, W, generator=g)
    with torch.no_grad():
        t = model(x).argmax(dim=1)

    def attribute(images, targets):
        return attribute_layers(model, images, targets, [method], layers)[method]

    maps01 = normalize_maps(attribute(x, t)[scored], (H, W))[0]
    seeds = [31, 32, 33]
    ours = arcc_scores(model, x, t, maps01, attribute, map_layers=[scored] * 3,
                       generators=[torch.Generator().manual_seed(s) for s in seeds], solver="direct", batch_size=2)
    modules = [ref.features[i] for i in (layers if method == "refinecam" else [scored])]
    cam = (pgc.RefineCAM(ref, sorted(modules, key=lambda m: -list(ref.features).index(m)))
           if method == "refinecam" else pgc.GradCAMPlusPlus(ref, modules))
    metric = ARCC(base_method=LogitTargets(cam), road_percentiles=[20, 40, 60, 80])
    lib = []
    for i in range(3):
        torch.manual_seed(seeds[i])  # the library's ROAD noise: the global RNG (the CAM draws nothing)
        lib.append(float(metric(x[i:i + 1], maps01[i:i + 1].numpy(), [ClassifierOutputSoftmaxTarget(int(t[i]))],
                                ref)[0]))
    lib = np.array(lib)
    assert (lib > 0.02).sum() >= 2 and np.ptp(lib) > 1e-3  # different, mostly non-trivial values (a ROAD <= 0: 0)
    np.testing.assert_allclose(ours["arcc"].numpy(), lib, atol=2e-5, rtol=0)
    # another noise draw moves the value by more than the tolerance: the noise is the library's
    other = arcc_scores(model, x, t, maps01, attribute, map_layers=[scored] * 3,
                        generators=[torch.Generator().manual_seed(s + 100) for s in seeds], solver="direct")
    assert np.abs(other["arcc"].numpy() - lib).max() > 1e-4


def test_combination_and_rescalings_are_the_formulas():
    coh = torch.tensor([0.9, 0.6, 0.0, 0.7], dtype=torch.float64)
    com = torch.tensor([0.2, 0.5, 0.3, 1.0], dtype=torch.float64)
    road = torch.tensor([0.2, -0.1, 0.4, 0.45], dtype=torch.float64)
    clip2, half = rescale_road(road, "clip2"), rescale_road(road, "half")
    assert clip2.tolist() == pytest.approx([0.4, 0.0, 0.8, 0.9]) and half.tolist() == pytest.approx([0.6, 0.45, 0.7, 0.725])
    lib = 3 * (1 / (coh + 1e-8) + 1 / (1 - com + 1e-8) + 1 / (half + 1e-8)) ** -1  # pytorch-grad-cam's expression
    got = arcc_combine(coh, com, half)
    np.testing.assert_allclose(got[:2].numpy(), lib[:2].numpy(), atol=1e-7)
    assert got[2] == 0 and got[3] == 0  # a zero term: 0 (the library's 1e-8 gives ~3e-8)
    assert arcc_combine(coh, com, clip2)[1] == 0
    with pytest.raises(LayersweepError, match=r"'metrics.options.arcc.road_rescale' is 'log'"):
        rescale_road(road, "log")


@pytest.mark.parametrize("r", [None, 0.3])
def test_registered_arcc_equals_arcc_scores_on_every_row(r):
    from layersweep.metrics.adcc import coherency_scores
    from layersweep.metrics.metric_shard import MetricContext, score_metric_shard
    from layersweep.metrics.rescale import rescale_maps
    from layersweep.preprocess import to_model_input
    from types import SimpleNamespace

    model, _ = narrow_vgg11(1)
    crops = np.random.default_rng(0).integers(0, 256, size=(2, H, W, 3), dtype=np.uint8)
    x = to_model_input(crops)
    t = torch.tensor([2, 5])
    layers = [5, 10, 15]

    def attribute(images, targets, crop_ids=None):
        return attribute_layers(model, images, targets, ["refinecam"], layers)["refinecam"]

    maps = attribute(x, t)
    shard = {"method": np.array("refinecam"), "crop_id": np.array(["a", "b"]), "target": t.numpy(),
             "prob": np.full(2, np.nan, dtype=np.float32), "layers": np.array(layers)}
    shard.update({f"map_{l}": maps[l].numpy() for l in layers})
    df = score_metric_shard("arcc", model, crops, shard, options={"road_rescale": "half", "attribution_batch": 3},
                            r=r, rtol=1e-6, seed=5, device="cpu", attribute=attribute, progress=False)
    assert len(df) == 6 and (("arcc_road" in df) == (r is None))
    ctx = SimpleNamespace(seed=5, crop_ids=["a", "b"], name="arcc", device=torch.device("cpu"))
    for row in df.itertuples():
        c = ["a", "b"].index(row.crop_id)
        S = normalize_maps(maps[row.layer][c:c + 1], (H, W))[0]
        ref_map = S
        if r is not None:
            S = rescale_maps(S, r, 1e-6)[0]
        gen = MetricContext.crop_generator(ctx, c, f"layer {row.layer}")
        res = arcc_scores(model, x[c:c + 1], t[c:c + 1], S, attribute, map_layers=[row.layer], reference=ref_map,
                          generators=[gen], road_rescale="half", solver="direct")
        assert row.arcc == pytest.approx(float(res["arcc"][0]), abs=1e-6)
        if r is None:
            assert row.arcc_road == pytest.approx(float(res["arcc_road"][0]), abs=1e-6)
        else:  # rescaled: coherency against the map of x, complexity the rescaled map's mean (r)
            coh = coherency_scores(x[c:c + 1], t[c:c + 1], S, attribute, map_layers=[row.layer], reference=ref_map)
            assert float(res["complexity"][0]) == pytest.approx(r, rel=1e-5) and 0 < float(coh[0]) <= 1
