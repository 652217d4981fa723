"""RefineCAM and its mixers (layersweep/attribution/refine.py, methods/refinecam.py): parity with pytorch-grad-cam
1.5.7's RefineCAM at every prefix of VGG11's pool layers, the mixers against their literal formulas, the
interpolation convention against cv2, and the engine / pipeline hooks."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from layersweep.attribution import attribute_layers, get_method
from layersweep.attribution.refine import MIXERS, layer_map01, minmax, mix_prefixes
from layersweep.errors import LayersweepError

pytestmark = pytest.mark.usefixtures("one_thread")
POOLS = [20, 15, 10, 5]  # deep -> shallow
H, W = 64, 96  # non-square; features.20 is 2 x 3


def _no_inplace(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return ref


@pytest.fixture(scope="module")
def vgg():
    """VGG11 in float64, a re-randomised 64-64-20 head, every bias redrawn from N(0, 0.1)."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    model = model.double().eval()
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    targets = torch.tensor([3, 11])
    return model, _no_inplace(model), x, targets


def _library_refinecam(ref, x, targets, layers, base_cls, **kwargs):
    cam = pgc.RefineCAM(ref, [ref.features[i] for i in layers], base_method=base_cls, **kwargs)
    try:
        return torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in targets])).double()
    finally:
        for base in cam.base_cam_per_layer:
            base.activations_and_grads.release()


@pytest.mark.parametrize("base, cls, prefixes", [("gradcampp", "GradCAMPlusPlus", (1, 2, 3, 4)),
                                                 ("layercam", "LayerCAM", (4,)), ("gradcam", "GradCAM", (4,))])
def test_prefixes_equal_pytorch_grad_cams_refinecam(vgg, base, cls, prefixes):
    """The map at layer l_k = the library's RefineCAM over l_1..l_k. The library normalises with max + 1e-7 and
    resizes in float32: a difference of ~1e-6, far below what a wrong layer, order or interpolation gives."""
    model, ref, x, t = vgg
    ours = attribute_layers(model, x, t, ["refinecam"], POOLS, options={"refinecam": {"base": base}})["refinecam"]
    assert set(ours) == set(POOLS)
    for k in prefixes:
        lib = _library_refinecam(ref, x, t, POOLS[:k], getattr(pgc, cls))
        mine = ours[POOLS[k - 1]]
        assert mine.shape == lib.shape == (2, H, W) and mine.dtype == torch.float64
        assert lib.std() > 0.05  # a map with structure, not a constant
        torch.testing.assert_close(mine, lib, atol=2e-5, rtol=0)
    # the prefixes differ from one another: each layer changes the product
    assert (ours[5] - ours[20]).abs().max() > 0.1


def test_scorecam_base_equals_the_librarys():
    """A perturbation base (its masked forwards at each layer), on a narrow VGG11-shaped net (the pools at
    features.5, 10, 15, 20 with 4..32 channels) so that the library's per-channel forwards stay few."""
    from torchvision.models.vgg import VGG, make_layers

    torch.manual_seed(1)
    model = VGG(make_layers([4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]), init_weights=False)
    model.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 7))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    model = model.double().eval()
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    t = torch.tensor([2, 6])
    ours = attribute_layers(model, x, t, ["refinecam"], POOLS, options={"refinecam": {"base": "scorecam"}})["refinecam"]
    ref = _no_inplace(model)
    for k in (1, 4):
        lib = _library_refinecam(ref, x, t, POOLS[:k], pgc.ScoreCAM)
        assert lib.std() > 0.05
        torch.testing.assert_close(ours[POOLS[k - 1]], lib, atol=2e-5, rtol=0)


def test_refinecam_shares_the_base_pass_and_keeps_only_what_was_asked(vgg):
    model, _, x, t = vgg
    both = attribute_layers(model, x, t, ["gradcampp", "refinecam"], POOLS)
    alone = attribute_layers(model, x, t, ["refinecam"], POOLS)
    assert list(alone) == ["refinecam"] and list(both) == ["gradcampp", "refinecam"]
    for layer in POOLS:
        torch.testing.assert_close(both["refinecam"][layer], alone["refinecam"][layer], atol=0, rtol=0)
    # the hook hands the base maps deep -> shallow to the mixer
    expect = mix_prefixes([(layer, both["gradcampp"][layer]) for layer in POOLS], (H, W), "product")
    for layer in POOLS:
        torch.testing.assert_close(alone["refinecam"][layer], expect[layer][0], atol=0, rtol=0)


def test_bad_options_name_the_key(vgg):
    model, _, x, t = vgg
    with pytest.raises(LayersweepError, match=r"'attribution.options.refinecam.base' is 'nosuch'; it must be the name"):
        attribute_layers(model, x, t, ["refinecam"], POOLS, options={"refinecam": {"base": "nosuch"}})
    with pytest.raises(LayersweepError, match=r"'attribution.options.refinecam.base' is 'refinecam'"):
        attribute_layers(model, x, t, ["refinecam"], POOLS, options={"refinecam": {"base": "refinecam"}})
    with pytest.raises(LayersweepError, match=r"'attribution.options.refinecam.mixer' is 'sum'; it must be one of"):
        attribute_layers(model, x, t, ["refinecam"], POOLS, options={"refinecam": {"mixer": "sum"}})


def test_a_recomputation_on_new_inputs_uses_all_the_shards_layers(vgg):
    """Coherency asks for one layer per explanation image; a mix is recomputed over all its layers."""
    from layersweep.pipeline import method_on_inputs

    model, _, x, t = vgg
    shard = SimpleNamespace(method="refinecam", layers=sorted(POOLS))
    attr = {"attribute_to": "output", "max_pairs": 8, "precision": "float32", "perturb_batch": 16,
            "n_baselines": 1, "options": {"base": "layercam", "mixer": "geometric"}}
    attribute = method_on_inputs(model, None, shard, attr, seed=0, device=x.device, preprocessing=None)
    full = attribute_layers(model, x, t, ["refinecam"], POOLS,
                            options={"refinecam": {"base": "layercam", "mixer": "geometric"}})["refinecam"]
    single = attribute_layers(model, x, t, ["refinecam"], [5],
                              options={"refinecam": {"base": "layercam", "mixer": "geometric"}})["refinecam"]
    got = attribute(x, t, layers=[5])
    torch.testing.assert_close(got[5], full[5], atol=0, rtol=0)
    assert (single[5] - full[5]).abs().max() > 0.05  # without the deeper layers it is another map


# ---------------------------------------------------------------------------------------------------------------
# the maths: per-layer normalisation, the interpolation convention, the mixers' literal formulas
# ---------------------------------------------------------------------------------------------------------------
def _np_minmax(a):
    return (a - a.min()) / (a.max() - a.min())


def test_layer_maps_are_relu_minmax_cv2_bilinear_minmax():
    """torch's bilinear interpolate with align_corners=False upsamples as cv2.resize(INTER_LINEAR), the library's
    resize: pixel centres aligned, edges clamped. align_corners=True is another map."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    n, const = layer_map01(maps, (23, 40))
    assert not const.any()
    for i in range(3):
        a = _np_minmax(np.maximum(maps[i].numpy(), 0))
        ref = _np_minmax(cv2.resize(a, (40, 23), interpolation=cv2.INTER_LINEAR))
        np.testing.assert_allclose(n[i].numpy(), ref, atol=1e-12)
    other = torch.nn.functional.interpolate(minmax(maps.clamp(min=0))[0][:, None], size=(23, 40), mode="bilinear",
                                            align_corners=True)[:, 0]
    assert (minmax(other)[0] - n).abs().max() > 0.02


def _literal(maps, mixer):
    """The mixers' formulas, literally, in numpy (maps: the N_j of a prefix)."""
    k = len(maps)
    stack = np.stack(maps)
    with np.errstate(divide="ignore", over="ignore"):
        if mixer == "product":
            m = np.prod(stack, axis=0)
        elif mixer == "geometric":
            m = np.prod(stack, axis=0) ** (1 / k)
        elif mixer == "logexp":
            m = (np.log(k) + 1) / np.log(np.sum(np.exp(1 / stack), axis=0))
        elif mixer == "expmean":
            m = 1 / np.log(np.mean(np.exp(1 / stack), axis=0))
        else:
            m = maps[-1]
    return _np_minmax(m)


@pytest.mark.parametrize("mixer", MIXERS)
def test_mixers_equal_their_literal_formulas(mixer):
    """Maps already at the input size, in {0} U [0.05, 1] (1/N <= 20: the literal exp does not overflow), one
    pixel at 0 and one at 1, so that N_j is the map itself."""
    rng = np.random.default_rng(1)
    B, size = 2, (9, 13)
    layers = []
    for _ in range(4):
        a = rng.uniform(0.05, 1, size=(B,) + size)
        a[:, 0, 0], a[:, -1, -1] = 0.0, 1.0
        a[:, 3, 4:7] = 0.0  # a few more zeros: 1/N = inf, the formulas' limit 0
        layers.append(a)
    ordered = [(key, torch.from_numpy(a)) for key, a in zip("dcba", layers)]
    out = mix_prefixes(ordered, size, mixer)
    assert list(out) == list("dcba")
    for k, key in enumerate("dcba", start=1):
        for b in range(B):
            ref = _literal([a[b] for a in layers[:k]], mixer)
            np.testing.assert_allclose(out[key][0][b].numpy(), ref, atol=1e-12, rtol=0, err_msg=f"{mixer} {k}")
    if mixer != "identity":  # at k = 1 every mixer is the deepest layer's map
        np.testing.assert_allclose(out["d"][0].numpy(), layers[0], atol=1e-12)


def test_soft_minimum_mixers_do_not_overflow_on_small_values():
    """exp(1 / N) overflows float32 at N < 0.012: a logsumexp keeps the limit (N_min (ln k + 1) for logexp)."""
    a = torch.full((1, 2, 2), 0.004, dtype=torch.float32)
    a[0, 0, 0], a[0, 1, 1] = 0.0, 1.0
    b = torch.ones((1, 2, 2), dtype=torch.float32)
    b[0, 1, 0] = 0.0
    out = mix_prefixes([("deep", b), ("shallow", a)], (2, 2), "logexp")["shallow"][0]
    assert torch.isfinite(out).all() and 0 < float(out[0, 0, 1]) < 0.05 and float(out[0, 1, 1]) == 1.0


def test_a_constant_layer_map_is_zero_and_flagged():
    flat = torch.zeros((2, 3, 3), dtype=torch.float64)
    flat[1] = torch.rand(3, 3, dtype=torch.float64)
    varying = torch.rand((2, 3, 3), dtype=torch.float64)
    out = mix_prefixes([(20, varying), (15, flat)], (6, 6), "product")
    assert out[20][1].tolist() == [False, False]
    assert out[15][1].tolist() == [True, False]
    assert float(out[15][0][0].abs().max()) == 0.0
    with pytest.raises(LayersweepError, match="mixer 'sum' is not one of"):
        mix_prefixes([(20, varying)], (6, 6), "sum")


def test_refinecam_is_registered_with_its_options():
    m = get_method("refinecam")
    assert m.pass_kind == "mix" and m.options == {"base": "gradcampp", "mixer": "product"}
