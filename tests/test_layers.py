"""Receptive fields: the analytic sizes against the support of the input gradient of one unit."""

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from layersweep.errors import LayersweepError
from layersweep.layers import layer_specs, parse_layers

# Hand-computed for VGG11 (3x3 convs with padding 1, 2x2 pools with stride 2); the report gives 150 at the end.
VGG11_RF = [3, 3, 4, 8, 8, 10, 18, 18, 26, 26, 30, 46, 46, 62, 62, 70, 102, 102, 134, 134, 150]


def vgg11_features() -> nn.Sequential:
    """torchvision's vgg11().features, without building (and initialising) its 120M-weight classifier."""
    return make_layers(cfgs["A"])


def test_analytic_sizes_match_hand_computation():
    specs = layer_specs(vgg11_features())
    assert [s.rf_size for s in specs] == VGG11_RF
    assert [s.kind for s in specs][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert specs[20].jump == 32


def _linearised(features: nn.Sequential) -> nn.Sequential:
    """Same geometry, no cancellation: positive conv weights, identity for ReLU, average for max pooling.

    With these, every input pixel in a unit's receptive field has a non-zero gradient, so the gradient's
    support *is* the receptive field (max pooling and ReLU would otherwise prune it). One channel per layer:
    the support is spatial, and VGG's 64-512 channels made this test ~40x slower for the same answer.
    """
    out = []
    for m in features:
        if isinstance(m, nn.Conv2d):
            c = nn.Conv2d(1, 1, m.kernel_size, m.stride, m.padding, m.dilation, bias=False)
            with torch.no_grad():
                c.weight.fill_(1.0)
            out.append(c)
        elif isinstance(m, nn.MaxPool2d):
            out.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        else:
            out.append(nn.Identity())
    return nn.Sequential(*out).double()


@pytest.mark.parametrize("size", [160])  # the centre unit of features.20 sees an unclipped 150x150
def test_receptive_field_equals_gradient_support(size):
    torch.manual_seed(0)
    features = vgg11_features()
    specs = layer_specs(features)
    net = _linearised(features)
    for spec in specs:
        x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        y = net[: spec.index + 1](x)
        h, w = y.shape[-2:]
        for row, col in [(h // 2, w // 2), (0, 0)]:  # an inner unit and a corner unit (padding clips it)
            (grad,) = torch.autograd.grad(y[0, 0, row, col], x, retain_graph=True)
            support = grad[0].abs().sum(0) > 0
            rows = support.any(1).nonzero().flatten()
            cols = support.any(0).nonzero().flatten()
            measured = (rows.min().item(), cols.min().item(), rows.max().item() + 1, cols.max().item() + 1)
            assert measured == spec.rf_box(row, col, size), (spec.name, row, col)


def test_parse_layers():
    assert parse_layers("all", 21) == list(range(21))
    assert parse_layers([18, "features.2", 2], 21) == [2, 18]
    with pytest.raises(LayersweepError, match="features.21"):
        parse_layers(["features.21"], 21)
    with pytest.raises(LayersweepError, match="conv5"):
        parse_layers(["conv5"], 21)
