"""Summation-to-delta of the DeepLiftShap maps (float64).

Without MaxPool, DeepLift's Rescale rule is exactly conservative: at every layer the map sums to
f(x) - mean_b f(b) of the target logit. On VGG11 it is not, and the gap must be captum's own
convergence delta, layer by layer (see passes.py: below every ReLU->MaxPool pair captum's ReLU rule
uses the plain max-pool gradient, so the sum stops matching f(x) - f(b)).
"""
from __future__ import annotations

import copy
import warnings

import captum.attr as captum_attr  # a pinned dependency: a broken install must fail, not skip
import pytest
import torch
import torchvision
from torch import nn

from layersweep.attribution import attribute_layers


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TinyNoPool(nn.Module):
    """VGG-shaped (features / avgpool / classifier) with Conv, ReLU, strided Conv, Linear; no MaxPool."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(8 * 9, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _target_gap(model, x, b, t):
    """f(x) - mean_b f(b) of each image's target logit (a plain forward: the independent side)."""
    with torch.no_grad():
        fx = model(x)[torch.arange(len(t)), t]
        fb = model(b)[:, t].mean(0)
    return fx - fb


def test_rescale_rule_is_complete_without_maxpool():
    torch.manual_seed(0)
    model = TinyNoPool().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)  # logits of order 1: the tolerance below is relative to them
    x, b = torch.randn(3, 3, 10, 10, dtype=torch.float64), torch.randn(4, 3, 10, 10, dtype=torch.float64)
    t = torch.tensor([0, 3, 4])
    layers = list(range(-1, len(model.features)))
    maps = attribute_layers(model, x, t, methods=["deepliftshap"], layers=layers, baselines=b)["deepliftshap"]
    expected = _target_gap(model, x, b, t)
    assert expected.abs().min() > 0.1  # a real difference to explain
    for layer in layers:
        assert maps[layer].dtype == torch.float64
        sums = maps[layer].sum(dim=(1, 2))
        # float64 round-off is ~1e-15 of the logits; 1e-9 leaves room and still catches any real error
        assert (sums - expected).abs().max() <= 1e-9 * expected.abs().max(), f"layer {layer}"


@pytest.fixture(scope="module")
def vgg64():
    """VGG11 features and avgpool; the head narrowed to 25088-64-64-20 (float64 of the full head is 0.8 GB)."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))
    model = model.double().eval()
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model, ref


def test_vgg11_gap_equals_captum_convergence_delta(vgg64):
    model, ref = vgg64
    torch.manual_seed(1)
    x, b = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([2, 11])
    layers = list(range(-1, 21))
    maps = attribute_layers(model, x, t, methods=["deepliftshap"], layers=layers, baselines=b)["deepliftshap"]
    expected = _target_gap(ref, x, b, t)
    gaps, scale = {}, {}
    for layer in layers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if layer == -1:
                _, delta = captum_attr.DeepLiftShap(ref).attribute(x, b, target=t, return_convergence_delta=True)
            else:
                _, delta = captum_attr.LayerDeepLiftShap(ref, ref.features[layer]).attribute(
                    x, b, target=t, return_convergence_delta=True)
        gaps[layer] = maps[layer].sum(dim=(1, 2)) - expected
        captum_gap = delta.view(len(t), len(b)).mean(dim=1)  # per (image, baseline) pair -> per image
        # the gaps are 1e-3 to 2e-2 here: scale the float64 tolerance by the map's own size (its L1 norm, the
        # size of the terms summed), so that a 1e-6 relative error in the gap would already fail
        scale[layer] = maps[layer].abs().sum(dim=(1, 2)).max()
        assert (gaps[layer] - captum_gap).abs().max() <= 1e-9 * scale[layer], f"layer {layer}"
    # the property the report's Fig. 5 pattern rests on: complete above the last ReLU->MaxPool pair,
    # incomplete below it (the MaxPool multiplier itself is conservative: layer 19 is its input)
    assert max(gaps[layer].abs().max() / scale[layer] for layer in (19, 20)) < 1e-12
    assert max(gaps[layer].abs().max() for layer in range(-1, 19)) > 1e-4
