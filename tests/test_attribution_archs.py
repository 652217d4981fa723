"""Parity of the engine with captum and pytorch-grad-cam on the other VGGs: vgg16, vgg11_bn, and vgg16
with Caffe's ceil-mode max-pooling (TorchRay's VOC model).

Random weights with random NON-ZERO biases and BatchNorm statistics (torchvision initialises them to 0 / 1,
which would hide a BatchNorm that is skipped or applied twice), a tiny non-square input, a few layers per
model including BatchNorm layers and the MaxPools, in float64 so that round-off does not blur the check.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from layersweep.attribution import attribute_layers
from layersweep.errors import LayersweepError

from test_attribution_parity import _captum_layer_dls, _library_cam, _no_inplace, raw_cams, rel_err  # noqa: F401

TOL = 1e-8
CFG = {"vgg11": "A", "vgg16": "D"}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# (arch, ceil_mode, input H x W, layers: BatchNorm, ReLU before a MaxPool, MaxPool, conv, last layer)
CASES = {
    "vgg16": ("vgg16", False, (32, 64), [-1, 3, 4, 28, 30]),
    "vgg11_bn": ("vgg11_bn", False, (32, 64), [-1, 0, 1, 2, 3, 12, 13, 26, 27, 28]),
    "vgg16_ceil": ("vgg16", True, (36, 52), [0, 22, 23, 30]),
}


class NarrowVGG(nn.Module):
    """torchvision's VGG of `arch` (its own `features`, avgpool, forward) with a narrow head, 25088-64-64-20 in
    the same Linear/ReLU/Dropout pattern: the full one is 400 MB read on every reference call."""

    def __init__(self, arch: str):
        super().__init__()
        self.features = make_layers(cfgs[CFG[arch.removesuffix("_bn")]], batch_norm=arch.endswith("_bn"))
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _randomised(arch: str, ceil_mode: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = NarrowVGG(arch)
    full = getattr(torchvision.models, arch)  # the same features as torchvision's own model
    with torch.device("meta"):
        assert str(full(weights=None).features) == str(model.features)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.MaxPool2d):
                m.ceil_mode = ceil_mode
    return model.double().eval()


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    arch, ceil_mode, (h, w), layers = CASES[request.param]
    model = _randomised(arch, ceil_mode, seed=3)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3, h, w, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    t = torch.tensor([2, 11, 19])
    out = attribute_layers(model, x, t, methods=["deepliftshap", "gradcampp"], layers=layers, baselines=b,
                           max_pairs=4)  # 2 images x 2 baselines per chunk: the batch is cut across chunks
    return dict(name=request.param, model=model, ref=_no_inplace(model), x=x, b=b, t=t, layers=layers, out=out)


def test_the_layers_cover_batchnorm_and_ceil_mode(case):
    kinds = {type(case["model"].features[i]).__name__ for i in case["layers"] if i >= 0}
    assert {"Conv2d", "ReLU", "MaxPool2d"} <= kinds
    if case["name"] == "vgg11_bn":
        assert "BatchNorm2d" in kinds
    if case["name"] == "vgg16_ceil":  # 36 -> 18 -> 9 -> 5: a ceil-mode pool that floor mode would shrink
        assert case["out"]["gradcampp"][23].shape[-2:] == (3, 4)


def test_deepliftshap_matches_captum(case):
    for layer in case["layers"]:
        ref = _captum_layer_dls(case["ref"], case["x"], case["b"], case["t"], layer)
        assert rel_err(case["out"]["deepliftshap"][layer], ref) < TOL, (case["name"], layer)


def test_gradcampp_matches_pytorch_grad_cam(case, raw_cams):
    for layer in case["layers"]:
        if layer < 0:
            continue
        ref = _library_cam("GradCAMPlusPlus", case["ref"], case["x"], case["t"], case["ref"].features[layer])
        assert rel_err(case["out"]["gradcampp"][layer], ref) < TOL, (case["name"], layer)


def test_batchnorm_in_training_mode_is_refused():
    model = NarrowVGG("vgg11_bn")  # train mode: batch statistics
    with pytest.raises(LayersweepError, match=r"model\.features\.1 is a BatchNorm2d .*model\.eval\(\)"):
        attribute_layers(model, torch.randn(1, 3, 32, 32), torch.tensor([0]), methods=["gradcampp"], layers=[1])
