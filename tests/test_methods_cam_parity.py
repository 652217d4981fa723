"""Parity of the CAM-family methods of the shared gradient pass with pytorch-grad-cam 1.5.7, layer by layer.

Fixture: VGG11 `features` with a 25088-64-64-20 head (as tests/test_attribution_parity.py), every conv and
linear bias redrawn from N(0, 0.1) (torchvision's zero biases hide bugs: FullGrad's bias terms vanish),
a non-square 32x40 input, three crops with different targets. The library runs on a copy with
ReLU(inplace=False); the engine on the original model. Reference maps are the library's raw cams (after
`np.maximum(cam, 0)`, before min-max and resize: the `raw_cams` fixture).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import threadpoolctl
import torch
import torchvision
from torch import nn

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget, FinerWeightedTarget

from layersweep.attribution import attribute_layers, registry
from layersweep.errors import LayersweepError

N_LAYERS = 21
LAYERS = list(range(N_LAYERS))
TOL = 1e-4
# engine name -> pytorch-grad-cam class, each called with ClassifierOutputTarget(target)
CAMS = {"hirescam": "HiResCAM", "gradcam_elementwise": "GradCAMElementWise", "eigencam": "EigenCAM",
        "eigengradcam": "EigenGradCAM", "segeigencam": "SegEigenCAM", "fem": "FEM"}

pytestmark = pytest.mark.usefixtures("one_thread", "one_blas_thread")  # one_thread: tests/conftest.py


@pytest.fixture(scope="module")
def one_blas_thread():
    """numpy's SVDs (engine and library) on one BLAS thread: on the shared 2-core machine, two threads
    competing with other jobs made this file 4x slower."""
    with threadpoolctl.threadpool_limits(1):
        yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|; the reference must not be all zeros (else the check would be empty)."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    scale = b.abs().max()
    assert scale > 0, "reference map is identically zero: the comparison would check nothing"
    return float((a - b).abs().max() / scale)


def _no_inplace(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return ref


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    model.eval()
    x = torch.randn(3, 3, 32, 40)
    targets = torch.tensor([1, 5, 7])
    out = attribute_layers(model, x, targets, methods=list(CAMS), layers=LAYERS)
    return dict(model=model, ref=_no_inplace(model), x=x, t=targets, out=out)


@pytest.fixture
def raw_cams(monkeypatch):
    """pytorch-grad-cam without scale_cam_image (min-max + resize): the raw cam after np.maximum(cam, 0)."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


def _library_cam(cls_name, model, x, targets, module):
    with getattr(pgc, cls_name)(model=model, target_layers=[module]) as cam:
        return torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in targets]))


@pytest.mark.parametrize("method", list(CAMS))
def test_cam_matches_pytorch_grad_cam_at_every_layer(setup, raw_cams, method):
    errors = _errors(setup["out"][method], lambda layer: _library_cam(
        CAMS[method], setup["ref"], setup["x"], setup["t"], setup["ref"].features[layer]))
    assert max(errors.values()) < TOL, errors


def _pass_weights(model, x, t, layers, methods) -> dict:
    """{layer: {method: (B, C) channel weights}} of one shared pass."""
    _, weights = attribute_layers(model, x, t, methods, layers, return_weights=True)
    return {layer: {m: weights[m][layer] for m in methods if m in weights} for layer in layers}


def _errors(maps: dict, reference, layers=LAYERS, min_nonzero=12) -> dict:
    """rel_err per layer. Where the reference is 0 everywhere the engine map must be exact zeros; at least
    `min_nonzero` layers must be compared. (Zeros are genuine: a centred 1x1 map is 0 for the Eigen methods
    at features.20; FEM's weights are 0 on maps of <= 4 positions, whose max z-score sqrt(n - 1) < 2, and
    its cam is <= 0 at some conv outputs with these random biases.)"""
    errors = {}
    for layer in layers:
        ref = reference(layer)
        if not ref.any():
            assert not maps[layer].any(), layer
            continue
        errors[layer] = rel_err(maps[layer], ref)
    assert len(errors) >= min(min_nonzero, len(layers)), errors
    return errors


def test_batches_cut_across_crops_give_the_same_maps(setup):
    """Every map of a crop is its own (utility seeds and class terms are per crop): splitting the batch
    changes nothing."""
    m, x, t = setup["model"], setup["x"], setup["t"]
    for methods, layers in ((list(CAMS) + ["finercam", "shapleycam", "randomcam"], [0, 9, 20]), (["fullgrad"], [0, 18])):
        whole = attribute_layers(m, x, t, methods=methods, layers=layers)
        parts = [attribute_layers(m, x[s], t[s], methods=methods, layers=layers) for s in (slice(0, 2), slice(2, 3))]
        for method in methods:
            for layer in layers:
                joined = torch.cat([p[method][layer] for p in parts])
                assert torch.allclose(joined, whole[method][layer], rtol=1e-5, atol=1e-6), (method, layer)


@pytest.mark.parametrize("method,cls_name", [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"),
                                             ("xgradcam", "XGradCAM")])
def test_channel_weights_equal_the_library_weights(setup, monkeypatch, method, cls_name):
    cls = getattr(pgc, cls_name)
    seen = []
    original = cls.get_cam_weights
    monkeypatch.setattr(cls, "get_cam_weights", lambda self, *a: seen.append(original(self, *a)) or seen[-1])
    layers = [2, 11, 20]
    weights = _pass_weights(setup["model"], setup["x"], setup["t"], layers, [method])
    for layer in layers:
        _library_cam(cls_name, setup["ref"], setup["x"], setup["t"], setup["ref"].features[layer])
        ref = torch.from_numpy(np.asarray(seen[-1]))
        assert weights[layer][method].shape == ref.shape
        assert rel_err(weights[layer][method], ref) < TOL, layer


def test_class_agnostic_methods_ignore_the_target(setup):
    m, x = setup["model"], setup["x"]
    other = attribute_layers(m, x, torch.tensor([0, 0, 0]), methods=["eigencam", "fem"], layers=[3, 15])
    for method in ("eigencam", "fem"):
        for layer in (3, 15):
            assert torch.equal(other[method][layer], setup["out"][method][layer])


def test_a_method_at_a_layer_kind_it_does_not_support_is_one_sentence(setup, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test

    @registry.register("test_conv_only", "gradient", layer_kinds=("conv",))
    def _conv_only(activations, grads):
        return (grads * activations).sum(dim=1)

    m, x, t = setup["model"], setup["x"], setup["t"]
    assert set(attribute_layers(m, x, t, methods=["test_conv_only"], layers=[0, 3])["test_conv_only"]) == {0, 3}
    with pytest.raises(LayersweepError, match=r"^method 'test_conv_only' is defined only at layers of kind conv, "
                                              r"but layer 2 is features\.2, a maxpool; .*'attribution\.layers'"):
        attribute_layers(m, x, t, methods=["gradcam", "test_conv_only"], layers=[0, 2])
    with pytest.raises(LayersweepError, match=r"layer 3 is the input of layer 3, i\.e\. features\.2, a maxpool"):
        attribute_layers(m, x, t, methods=["test_conv_only"], layers=[3], attribute_to="input")


def _nearest_classes(logits: torch.Tensor, target: int, n: int = 3) -> list[int]:
    """The n other classes whose logits are nearest to the target's (FinerCAM's comparison classes)."""
    distance = (logits - logits[target]).abs()
    distance[target] = float("inf")
    return [int(j) for j in distance.argsort()[:n]]


def _library(cam_obj, x, targets):
    with cam_obj as cam:
        return torch.from_numpy(cam(x, targets))


def test_finercam_matches_pytorch_grad_cam_at_every_layer(setup, raw_cams):
    m, ref, x, t = setup["model"], setup["ref"], setup["x"], setup["t"]
    with torch.no_grad():
        logits = ref(x)
    targets = [FinerWeightedTarget(int(c), _nearest_classes(logits[i], int(c)), 1) for i, c in enumerate(t)]
    out = attribute_layers(m, x, t, methods=["finercam"], layers=LAYERS)["finercam"]
    errors = _errors(out, lambda layer: _library(pgc.FinerCAM(ref, [ref.features[layer]]), x, targets))
    assert max(errors.values()) < TOL, errors
    gradcam = attribute_layers(m, x, t, methods=["gradcam"], layers=[13])["gradcam"][13]
    assert rel_err(out[13], gradcam) > 1e-2  # the finer target is not the logit


def test_shapleycam_with_rest_matches_pytorch_grad_cam_at_every_layer(setup, raw_cams):
    m, ref, x, t = setup["model"], setup["ref"], setup["x"], setup["t"]
    out = attribute_layers(m, x, t, methods=["shapleycam", "gradcam"], layers=LAYERS)
    errors = _errors(out["shapleycam"], lambda layer: _library(
        pgc.ShapleyCAM(ref, [ref.features[layer]]), x, [ClassifierOutputReST(int(c)) for c in t]))
    assert max(errors.values()) < TOL, errors
    assert rel_err(out["shapleycam"][13], out["gradcam"][13]) > 1e-2  # the Hessian term matters with ReST


@pytest.mark.parametrize("layer", [0, 4, 10, 15, 20])
def test_shapleycam_with_the_logit_target_is_gradcam(setup, raw_cams, layer):
    """VGG is piecewise linear: the library's Hessian-vector product of the logit is 0 (METHODS.md 1.1)."""
    ref, x, t = setup["ref"], setup["x"], setup["t"]
    library = _library(pgc.ShapleyCAM(ref, [ref.features[layer]]), x, [ClassifierOutputTarget(int(c)) for c in t])
    gradcam = attribute_layers(setup["model"], x, t, methods=["gradcam"], layers=[layer])["gradcam"][layer]
    assert rel_err(gradcam, library) < TOL


def test_shapleycam_weights_equal_the_library_weights(setup, monkeypatch):
    ref, x, t = setup["ref"], setup["x"], setup["t"]
    seen = []
    original = pgc.ShapleyCAM.get_cam_weights
    monkeypatch.setattr(pgc.ShapleyCAM, "get_cam_weights", lambda self, *a: seen.append(original(self, *a)) or seen[-1])
    weights = _pass_weights(setup["model"], x, t, [8, 17], ["shapleycam"])
    for layer in (8, 17):
        _library(pgc.ShapleyCAM(ref, [ref.features[layer]]), x, [ClassifierOutputReST(int(c)) for c in t])
        assert rel_err(weights[layer]["shapleycam"], torch.from_numpy(seen[-1])) < TOL


def test_finercam_and_randomcam_weights_equal_the_library_weights(setup, monkeypatch):
    from layersweep.attribution.methods.randomcam import layer_seed

    ref, x, t = setup["ref"], setup["x"], setup["t"]
    seen = []
    for cls in (pgc.GradCAM, pgc.RandomCAM):  # FinerCAM's weights are its base GradCAM's
        monkeypatch.setattr(cls, "get_cam_weights",
                            lambda self, *a, _orig=cls.get_cam_weights: seen.append(_orig(self, *a)) or seen[-1])
    weights = _pass_weights(setup["model"], x, t, [5], ["finercam", "randomcam"])
    with torch.no_grad():
        logits = ref(x)
    finer = [FinerWeightedTarget(int(c), _nearest_classes(logits[i], int(c)), 1) for i, c in enumerate(t)]
    _library(pgc.FinerCAM(ref, [ref.features[5]]), x, finer)
    assert rel_err(weights[5]["finercam"], torch.from_numpy(seen[-1])) < TOL
    np.random.seed(layer_seed(5))
    _library(pgc.RandomCAM(ref, [ref.features[5]]), x[:1], [ClassifierOutputTarget(int(t[0]))])
    assert rel_err(weights[5]["randomcam"][:1], torch.from_numpy(seen[-1])) < TOL


def test_randomcam_is_the_library_with_a_fixed_seed_per_layer(setup, raw_cams):
    from layersweep.attribution.methods.randomcam import layer_seed

    m, ref, x, t = setup["model"], setup["ref"], setup["x"], setup["t"]
    out = attribute_layers(m, x, t, methods=["randomcam"], layers=LAYERS)["randomcam"]

    def library(i, layer):
        np.random.seed(layer_seed(layer))  # the library draws from numpy's global RNG, (1, C) for one image
        return _library(pgc.RandomCAM(ref, [ref.features[layer]]), x[i:i + 1], [ClassifierOutputTarget(int(t[i]))])

    errors = _errors({k: v[:1] for k, v in out.items()}, lambda layer: library(0, layer), min_nonzero=8)
    assert max(errors.values()) < TOL, errors
    for i, layer in [(1, 3), (2, 14)]:
        assert rel_err(out[layer][i:i + 1], library(i, layer)) < TOL
    again = attribute_layers(m, x[1:], t[1:], methods=["randomcam"], layers=[3, 14])["randomcam"]
    assert all(torch.equal(again[layer], out[layer][1:]) for layer in (3, 14))  # batch-independent


CONVS = [0, 3, 6, 8, 11, 13, 16, 18]


def test_fullgrad_terms_and_their_sum_match_pytorch_grad_cam(setup, monkeypatch):
    """Per-layer terms vs the library's own gradients and biases; input term + resized conv terms vs its map."""
    import cv2
    import pytorch_grad_cam.fullgrad_cam as fullgrad_cam
    from pytorch_grad_cam.utils.image import scale_cam_image

    m, ref, x, t = setup["model"], setup["ref"], setup["x"], setup["t"]
    monkeypatch.setattr(fullgrad_cam, "scale_cam_image", lambda cam, target_size=None: cam)  # only its aggregate
    fg = pgc.FullGrad(ref, [])
    total = torch.from_numpy(fg(x, [ClassifierOutputTarget(int(c)) for c in t]))
    assert [ref.features[i] for i in CONVS] == fg.target_layers
    terms = attribute_layers(m, x, t, methods=["fullgrad"], layers=[-1] + CONVS)["fullgrad"]
    for i, layer in enumerate(CONVS):
        bias_grad = np.abs(fg.bias_data[i][None, :, None, None] * fg.activations_and_grads.gradients[i].numpy())
        b, c, h, w = bias_grad.shape
        expected = scale_cam_image(bias_grad.reshape(b * c, h, w)).reshape(b, c, h, w).sum(1)
        assert rel_err(terms[layer], torch.from_numpy(expected)) < TOL, layer
    height, width = x.shape[-2:]
    resized = [np.stack([cv2.resize(mp, (width, height)) for mp in terms[layer].numpy()]) for layer in CONVS]
    assert rel_err(terms[-1] + torch.from_numpy(np.sum(resized, axis=0)), total) < TOL
    fg.activations_and_grads.release()


def test_fullgrad_at_a_relu_is_one_sentence(setup):
    with pytest.raises(LayersweepError, match=r"^method 'fullgrad' is defined only at layers of kind conv or batchnorm or input, "
                                              r"but layer 1 is features\.1, a relu"):
        attribute_layers(setup["model"], setup["x"], setup["t"], methods=["fullgrad"], layers=[0, 1])
