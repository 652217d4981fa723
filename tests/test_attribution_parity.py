"""Parity of the shared-pass engine with the reference libraries, layer by layer, on VGG11.

References: captum's LayerDeepLiftShap / DeepLiftShap and pytorch-grad-cam's CAMs, each called once per
layer on a copy of the model with ReLU(inplace=False) (see the in-place note in docs/methods.md). The engine
runs on the original model (inplace=True ReLUs), which it must neither need nor change.

The per-layer sweep uses torchvision's VGG11 `features` (the 21 layers under test) and avgpool with the
classifier narrowed from 25088-4096-4096-20 to 25088-64-64-20 (same Linear/ReLU/Dropout pattern): the
full head is 411 MB of weights read on every one of the ~130 reference calls, minutes on this machine.
`test_full_torchvision_vgg11` checks a few layers on the unmodified torchvision model.
"""
from __future__ import annotations

import copy
import warnings

import captum.attr as captum_attr  # pinned dependencies: a broken install must fail, not skip
import pytest
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from layersweep.attribution import attribute_layers

N_LAYERS = 21
LAYERS = list(range(-1, N_LAYERS))
TOL = 1e-4
CAMS = {"gradcampp": "GradCAMPlusPlus", "gradcam": "GradCAM", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|; the reference must not be all zeros (else the check would be empty)."""
    a, b = a.detach(), b.detach()
    scale = b.abs().max()
    assert scale > 0, "reference map is identically zero: the comparison would check nothing"
    return float((a - b).abs().max() / scale)


def _random_biases(model, seed=0):
    """torchvision initialises every bias to 0, which hides bias-handling bugs: draw them at random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model


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
    _random_biases(model).eval()
    ref = _no_inplace(model)
    x = torch.randn(3, 3, 32, 48)  # non-square: an H/W mix-up shows
    baselines = torch.randn(2, 3, 32, 48)  # captum's minimum for DeepLiftShap; every reference call is 2 x 6 rows
    targets = torch.tensor([1, 5, 7])
    methods = ["deepliftshap", *CAMS]
    out = attribute_layers(model, x, targets, methods=methods, layers=LAYERS, baselines=baselines)
    out_in = attribute_layers(model, x, targets, methods=methods, layers=LAYERS, baselines=baselines,
                              attribute_to="input")
    return dict(model=model, ref=ref, x=x, b=baselines, t=targets, out=out, out_in=out_in)


def test_engine_leaves_model_untouched(setup):
    relus = [m for m in setup["model"].modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)  # torchvision's default, not flipped by the engine
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in setup["model"].modules())


def test_shapes_and_dtype(setup):
    with torch.no_grad():
        h = setup["x"]
        for layer, module in enumerate(setup["ref"].features):
            h = module(h)
            for method in setup["out"]:
                m = setup["out"][method][layer]
                assert m.shape == (3,) + tuple(h.shape[2:]) and m.dtype == torch.float32
                assert not m.requires_grad and m.grad_fn is None  # no autograd graph kept alive
    assert setup["out"]["deepliftshap"][-1].shape == (3, 32, 48)


def _tail(model, layer):
    """The network after features[layer]: what the report's code fed to DeepLiftShap when captum refused."""
    return nn.Sequential(*model.features[layer + 1:], model.avgpool, nn.Flatten(1), model.classifier)


def _captum_layer_dls(ref, x, b, t, layer, to_input=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns on every call that it sets hooks
        if layer == -1:
            return captum_attr.DeepLiftShap(ref).attribute(x, b, target=t).sum(1).detach()
        try:
            return captum_attr.LayerDeepLiftShap(ref, ref.features[layer]).attribute(
                x, b, target=t, attribute_to_layer_input=to_input).sum(1).detach()
        except (AssertionError, RuntimeError):  # captum refuses some layers in some versions
            assert not to_input
            with torch.no_grad():
                head = nn.Sequential(*ref.features[:layer + 1])
                ax, ab = head(x), head(b)
            return captum_attr.DeepLiftShap(_tail(ref, layer)).attribute(ax, ab, target=t).sum(1).detach()


@pytest.mark.parametrize("layer", LAYERS)
def test_deepliftshap_matches_captum(setup, layer):
    ref = _captum_layer_dls(setup["ref"], setup["x"], setup["b"], setup["t"], layer)
    assert rel_err(setup["out"]["deepliftshap"][layer], ref) < TOL


@pytest.mark.parametrize("layer", [2, 20])
def test_deepliftshap_matches_captum_on_the_tail_network(setup, layer):
    """Second, independent route at the MaxPool outputs: DeepLiftShap of the network cut after the layer."""
    r = setup["ref"]
    with torch.no_grad():
        head = nn.Sequential(*r.features[:layer + 1])
        ax, ab = head(setup["x"]), head(setup["b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = captum_attr.DeepLiftShap(_tail(r, layer)).attribute(ax, ab, target=setup["t"]).sum(1).detach()
    assert rel_err(setup["out"]["deepliftshap"][layer], ref) < TOL


@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_deepliftshap_input_matches_captum_attribute_to_layer_input(setup, layer):
    ref = _captum_layer_dls(setup["ref"], setup["x"], setup["b"], setup["t"], layer, to_input=True)
    assert rel_err(setup["out_in"]["deepliftshap"][layer], ref) < TOL


@pytest.fixture
def raw_cams(monkeypatch):
    """pytorch-grad-cam without scale_cam_image (min-max + resize): the raw cam after np.maximum(cam, 0)."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


def _library_cam(cls_name, model, x, targets, module):
    with getattr(pgc, cls_name)(model=model, target_layers=[module]) as cam:
        return torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in targets]))


@pytest.mark.parametrize("method", list(CAMS))
@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_cam_matches_pytorch_grad_cam(setup, raw_cams, method, layer):
    ref = _library_cam(CAMS[method], setup["ref"], setup["x"], setup["t"], setup["ref"].features[layer])
    assert rel_err(setup["out"][method][layer], ref) < TOL


@pytest.mark.parametrize("layer", [1, 2, 11, 20])
def test_gradcampp_on_module_input_is_the_previous_output(setup, raw_cams, layer):
    ref = _library_cam("GradCAMPlusPlus", setup["ref"], setup["x"], setup["t"], setup["ref"].features[layer - 1])
    assert rel_err(setup["out_in"]["gradcampp"][layer], ref) < TOL


@pytest.mark.parametrize("layer", [4])
def test_full_torchvision_vgg11(raw_cams, layer):
    """The unmodified torchvision VGG11 (full 25088-4096-4096-20 head) at a ReLU feeding a MaxPool."""
    torch.manual_seed(1)
    model = _random_biases(torchvision.models.vgg11(weights=None, num_classes=20)).eval()
    ref = _no_inplace(model)
    x, b, t = torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.tensor([0, 19, 4])
    out = attribute_layers(model, x, t, methods=["deepliftshap", "gradcampp"], layers=[layer], baselines=b)
    assert rel_err(out["deepliftshap"][layer], _captum_layer_dls(ref, x, b, t, layer)) < TOL
    assert rel_err(out["gradcampp"][layer], _library_cam("GradCAMPlusPlus", ref, x, t, ref.features[layer])) < TOL


REAL_SIZE_LAYERS = [4, 16, 19, 20]  # 112x112 ReLU before a MaxPool, 14x14 conv, 14x14 ReLU, 7x7 MaxPool


@pytest.fixture(scope="module")
def real_size():
    """The study's crop size: one 224x224 crop (at 32 px the last layers are 2x2 and 1x1 maps)."""
    torch.manual_seed(2)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))
    _random_biases(model, seed=2).eval()
    x, b, t = torch.randn(1, 3, 224, 224), torch.randn(2, 3, 224, 224), torch.tensor([13])
    out = attribute_layers(model, x, t, methods=["deepliftshap", "gradcampp", "gradcam"], layers=REAL_SIZE_LAYERS,
                           baselines=b, max_pairs=2)
    return dict(ref=_no_inplace(model), x=x, b=b, t=t, out=out)


@pytest.mark.parametrize("layer", REAL_SIZE_LAYERS)
def test_parity_at_224_px(real_size, raw_cams, layer):
    ref, x, b, t, out = (real_size[k] for k in ("ref", "x", "b", "t", "out"))
    size = {4: 112, 16: 14, 19: 14, 20: 7}[layer]
    assert out["deepliftshap"][layer].shape == (1, size, size)
    assert rel_err(out["deepliftshap"][layer], _captum_layer_dls(ref, x, b, t, layer)) < TOL
    for method in ("gradcampp", "gradcam"):
        cam = _library_cam(CAMS[method], ref, x, t, ref.features[layer])
        assert rel_err(out[method][layer], cam) < TOL, method
