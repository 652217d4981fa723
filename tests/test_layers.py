"""Receptive fields: the analytic sizes against the support of the input gradient of one unit."""

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from layersweep.errors import LayersweepError
from layersweep.layers import layer_specs

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


def test_sites_resolve_indices_names_and_sets():
    from layersweep.attribution.sites import arch_site_table

    table = arch_site_table("vgg11")
    assert table.resolve("all") == list(range(21))
    assert table.resolve([18, "features.2", 2]) == [2, 18]
    assert table.resolve("blocks") == [2, 5, 10, 15, 20]  # a VGG block ends at its max-pool
    with pytest.raises(LayersweepError, match="features.21"):
        table.resolve(["features.21"])
    with pytest.raises(LayersweepError, match="conv5"):
        table.resolve(["conv5"])


def test_graph_receptive_fields_equal_the_chain_recursion_on_vgg_and_the_hand_computation_on_resnet():
    from layersweep.layers import arch_layer_specs

    assert [(s.name, s.kind, s.rf_size, s.jump, s.offset) for s in arch_layer_specs("vgg11")] == \
        [(s.name, s.kind, s.rf_size, s.jump, s.offset) for s in layer_specs(vgg11_features())]
    specs = {s.name: s for s in arch_layer_specs("resnet18")}
    # conv1 7x7/2 -> 7 (jump 2); maxpool 3/2 -> 11 (jump 4); two 3x3 convs -> 27
    assert (specs["conv1"].rf_size, specs["conv1"].jump) == (7, 2)
    assert (specs["maxpool"].rf_size, specs["maxpool"].jump) == (11, 4)
    assert specs["layer1.0.relu_1"].rf_size == 27 and specs["layer1.0.relu_1"].label == "layer1.0"
    # layer1.1 adds two more 3x3 convs at jump 4: 27 + 16 = 43
    assert specs["layer1.1.relu_1"].rf_size == 43
    # downsample 1x1/2 keeps 43 (jump 8); main branch 3x3/2 (+8) then 3x3 (+16): the sum takes the wider, 67
    assert (specs["layer2.0.downsample.0"].rf_size, specs["layer2.0.downsample.0"].jump) == (43, 8)
    assert specs["layer2.0.add"].rf_size == 67
