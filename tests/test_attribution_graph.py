"""The graph engine on networks that are not a chain: parity with captum and pytorch-grad-cam per site.

Fixtures (float64, random non-zero BatchNorm statistics and affine parameters, re-randomised heads,
non-square inputs, batches of different targets):
- a small torchvision ResNet (BasicBlock, one block per stage) and ResNet-50's Bottleneck stage 1;
- torchvision's MobileNetV2 (ReLU6, which captum has no rule for: the plain gradient, as captum does).

The libraries run on a *prepared copy* of the model, because they hook modules, not calls:
- torchvision's BasicBlock calls one `relu` module twice and adds in place (`out += identity`). captum's
  DeepLift refuses a reused module, and pytorch-grad-cam hooks its first call only (and, on the CPU, stores
  bn2 + identity as "bn2", since the in-place add overwrites it). The copy gives each call its own ReLU and
  the sum its own `nn.Identity`, out of place, sharing every parameter.
- in-place ReLU / ReLU6 are made out of place.
The engine runs on the unmodified model.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from captum import attr as captum_attr
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from layersweep.attribution import attribute_layers
from layersweep.attribution.reference import library_copy, library_module
from layersweep.attribution.sites import site_table
from layersweep.errors import LayersweepError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TOL = 1e-8  # float64


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    scale = b.abs().max()
    assert scale > 0, "the reference is identically zero: the comparison would check nothing"
    return float((a - b).abs().max() / scale)


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, non-zero biases, a re-drawn head; float64, eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.double().eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = randomise(torchvision.models.ResNet(BasicBlock, [1, 1, 1, 1], num_classes=7), seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 48, 40, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 48, 40, generator=g, dtype=torch.float64)
    return dict(model=model, ref=library_copy(model), x=x, b=b, t=torch.tensor([1, 4, 6]))


# stem ReLU and max-pool; inside a block; a downsample branch; a residual sum; block outputs (2nd ReLU call)
RESNET_SITES = ["relu", "maxpool", "layer1.0.relu", "layer1.0.bn2", "layer1.0.add", "layer1.0.relu_1",
                "layer2.0.downsample.1", "layer2.0.relu_1", "layer3.0.conv2", "layer4.0.relu_1"]


def test_site_names_follow_torchvision(resnet):
    from torchvision.models.feature_extraction import get_graph_node_names

    table = site_table(resnet["model"])
    _, eval_names = get_graph_node_names(resnet["model"])
    assert set(table.names) <= set(eval_names)
    assert set(RESNET_SITES) <= set(table.names)
    assert table.resolve("blocks") == [table.by_name[f"layer{k}.0.relu_1"] for k in range(1, 5)]
    assert table.resolve(["layer2.0"]) == [table.by_name["layer2.0.relu_1"]]  # a block = its output
    with pytest.raises(LayersweepError, match="layer1.0.relu_1"):  # the nearest names are listed
        table.resolve(["layer1.0.relu_2"])


def test_deepliftshap_matches_captum_at_every_kind_of_site(resnet):
    model, ref, x, b, t = (resnet[k] for k in ("model", "ref", "x", "b", "t"))
    before = copy.deepcopy(model.state_dict())
    out = attribute_layers(model, x, t, ["deepliftshap"], RESNET_SITES, baselines=b, max_pairs=4)["deepliftshap"]
    for site in RESNET_SITES:
        expected = captum_attr.LayerDeepLiftShap(ref, library_module(ref, site)).attribute(x, b, target=t).sum(1)
        assert rel_err(out[site], expected.detach()) < TOL, site
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k]), k


def test_deepliftshap_sums_to_the_change_of_the_logit_above_the_max_pool(resnet):
    """Closed form: above the stem's max-pool only ReLUs and linear nodes remain, where DeepLift's rescale
    rule is exact, so the map at a site every path passes through (a residual sum, a block output) sums to
    f(x) - mean_b f(b) (captum's summation-to-delta). A site inside a block is not such a cut."""
    model, x, b, t = (resnet[k] for k in ("model", "x", "b", "t"))
    out = attribute_layers(model, x, t, ["deepliftshap"], ["layer1.0.add", "layer2.0.relu_1", "layer3.0.add"],
                           baselines=b)["deepliftshap"]
    with torch.no_grad():
        fx = model(x).gather(1, t[:, None])[:, 0]
        fb = model(b)[:, t].mean(0)
    for site, m in out.items():
        assert torch.allclose(m.sum(dim=(1, 2)), fx - fb, rtol=1e-10, atol=1e-10), site


@pytest.mark.parametrize("method,cls", [("gradcampp", "GradCAMPlusPlus"), ("layercam", "LayerCAM"),
                                        ("gradcam", "GradCAM"), ("xgradcam", "XGradCAM"), ("hirescam", "HiResCAM")])
def test_cams_match_pytorch_grad_cam(resnet, monkeypatch, method, cls):
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)  # raw cams
    model, ref, x, t = (resnet[k] for k in ("model", "ref", "x", "t"))
    out = attribute_layers(model, x, t, [method], RESNET_SITES)[method]
    for site in RESNET_SITES:
        with getattr(pgc, cls)(model=ref, target_layers=[library_module(ref, site)]) as cam:
            expected = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
        if not np.any(expected):
            assert not out[site].any(), site
            continue
        assert rel_err(out[site], torch.from_numpy(expected)) < 1e-6, site


def test_liftcam_contributions_sum_to_the_zeroed_site(resnet):
    """LIFT-CAM's weights sum to f(A) - f(A <- 0) (DeepLift's summation with the zero reference), with the
    site zeroed by a forward hook on the library copy, the skip branch left as it is."""
    model, ref, x, t = (resnet[k] for k in ("model", "ref", "x", "t"))
    sites = ["layer1.0.bn2", "layer2.0.relu", "layer3.0.add"]
    _, weights = attribute_layers(model, x, t, ["liftcam"], sites, return_weights=True)
    with torch.no_grad():
        fx = ref(x).gather(1, t[:, None])[:, 0]
        for site in sites:
            handle = library_module(ref, site).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
            f0 = ref(x).gather(1, t[:, None])[:, 0]
            handle.remove()
            assert torch.allclose(weights["liftcam"][site].sum(1), fx - f0, rtol=1e-9, atol=1e-9), site


def test_ablationcam_matches_pytorch_grad_cam_at_block_outputs(resnet, monkeypatch):
    """At a block's output (after its last ReLU) the library ablates with 0, which is what the engine does;
    the tail reads the clean skip values of the image."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model, ref, x, t = (resnet[k] for k in ("model", "ref", "x", "t"))
    sites = ["layer1.0.relu_1", "layer2.0.relu_1"]
    out = attribute_layers(model, x[:2], t[:2], ["ablationcam"], sites)["ablationcam"]
    for site in sites:
        with pgc.AblationCAM(model=ref, target_layers=[library_module(ref, site)]) as cam:
            cam.batch_size = 64
            expected = cam(x[:2], [ClassifierOutputTarget(int(c)) for c in t[:2]])
        assert rel_err(out[site], torch.from_numpy(expected)) < 1e-5, site  # the library's scores are float32


def test_ablationcam_with_the_library_value_inside_a_block(resnet, monkeypatch):
    """At bn2 (its consumer is the residual sum, not a ReLU) the library ablates with "minimum - 1e7"; so does
    the engine, playing the game at the site itself."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model, ref, x, t = (resnet[k] for k in ("model", "ref", "x", "t"))
    out = attribute_layers(model, x[:1], t[:1], ["ablationcam"], ["layer1.0.bn2"])["ablationcam"]
    with pgc.AblationCAM(model=ref, target_layers=[library_module(ref, "layer1.0.bn2")]) as cam:
        cam.batch_size = 64
        expected = cam(x[:1], [ClassifierOutputTarget(int(t[0]))])
    assert rel_err(out["layer1.0.bn2"], torch.from_numpy(expected)) < 1e-5


def test_fullgrad_takes_batchnorm_shifts_and_sums_to_the_library_map(resnet, monkeypatch):
    """ResNet convs have no bias: FullGrad's terms are the BatchNorm shifts' and the input's. Resized and
    summed over every BatchNorm site, they equal pytorch-grad-cam's FullGrad map."""
    import cv2
    import pytorch_grad_cam.fullgrad_cam as fullgrad_cam

    monkeypatch.setattr(fullgrad_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model, ref, x, t = (resnet[k] for k in ("model", "ref", "x", "t"))
    table = site_table(model)
    bns = [s.index for s in table.sites if s.kind == "batchnorm"]
    fg = pgc.FullGrad(ref, [])
    total = torch.from_numpy(fg(x, [ClassifierOutputTarget(int(c)) for c in t]))
    fg.activations_and_grads.release()
    terms = attribute_layers(model, x, t, ["fullgrad"], [-1] + bns)["fullgrad"]
    height, width = x.shape[-2:]
    resized = [np.stack([cv2.resize(m, (width, height)) for m in terms[i].numpy()]) for i in bns]
    assert rel_err(terms[-1] + torch.from_numpy(np.sum(resized, axis=0)), total) < 1e-6


def test_bottleneck_resnet_deepliftshap_matches_captum():
    torch.manual_seed(0)
    model = randomise(torchvision.models.ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5), seed=3)
    ref = library_copy(model)
    g = torch.Generator().manual_seed(4)
    x, b = torch.randn(2, 3, 40, 32, generator=g, dtype=torch.float64), torch.randn(2, 3, 40, 32, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3])
    sites = ["layer1.0.relu_1", "layer1.0.add", "layer1.0.relu_2", "layer2.0.downsample.0", "layer4.0.relu_2"]
    out = attribute_layers(model, x, t, ["deepliftshap"], sites, baselines=b)["deepliftshap"]
    for site in sites:
        expected = captum_attr.LayerDeepLiftShap(ref, library_module(ref, site)).attribute(x, b, target=t).sum(1)
        assert rel_err(out[site], expected.detach()) < TOL, site


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    model = randomise(torchvision.models.mobilenet_v2(num_classes=6, width_mult=0.35), seed=5)
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU6):
            m.inplace = False
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 40, 48, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 40, 48, generator=g, dtype=torch.float64)
    return dict(model=model, ref=ref, x=x, b=b, t=torch.tensor([2, 5]))


MOBILENET_SITES = ["features.0.2", "features.2.conv.0.2", "features.4.conv.2", "features.7.conv.3", "features.18.2"]


def test_mobilenet_deepliftshap_takes_captums_plain_gradient_through_relu6(mobilenet):
    model, ref, x, b, t = (mobilenet[k] for k in ("model", "ref", "x", "b", "t"))
    out = attribute_layers(model, x, t, ["deepliftshap"], MOBILENET_SITES, baselines=b)["deepliftshap"]
    for site in MOBILENET_SITES:
        expected = captum_attr.LayerDeepLiftShap(ref, ref.get_submodule(site)).attribute(x, b, target=t).sum(1)
        assert rel_err(out[site], expected.detach()) < TOL, site


def test_mobilenet_cams_match_pytorch_grad_cam(mobilenet, monkeypatch):
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model, ref, x, t = (mobilenet[k] for k in ("model", "ref", "x", "t"))
    out = attribute_layers(model, x, t, ["gradcampp", "layercam"], MOBILENET_SITES)
    for method, cls in (("gradcampp", "GradCAMPlusPlus"), ("layercam", "LayerCAM")):
        for site in MOBILENET_SITES:
            with getattr(pgc, cls)(model=ref, target_layers=[ref.get_submodule(site)]) as cam:
                expected = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
            assert rel_err(out[method][site], torch.from_numpy(expected)) < 1e-6, (method, site)


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf"])
def test_every_family_traces_with_named_blocks_and_runs_a_gradient_sweep(arch):
    """Each adapter's blocks and stages name real sites, and the gradient pass runs at every stage;
    Grad-CAM++ at the last stage equals pytorch-grad-cam's on the same module."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=4).eval()
    table = site_table(model)
    stages = table.resolve("stages")
    assert len(table.resolve("blocks")) >= len(stages) >= 3
    x = torch.randn(1, 3, 64, 64)
    out = attribute_layers(model, x, torch.tensor([1]), ["gradcampp"], "stages")["gradcampp"]
    assert set(out) == set(stages) and all(torch.isfinite(m).all() for m in out.values())


class SmoothNet(nn.Module):
    """Every activation captum has its rescale rule for (matched by exact type), and one it has none for."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3), nn.ELU(),
                                      nn.Conv2d(6, 8, 3, stride=2), nn.LeakyReLU(0.1), nn.Conv2d(8, 8, 3),
                                      nn.Softplus(), nn.Conv2d(8, 8, 1), nn.Sigmoid(), nn.Conv2d(8, 8, 1),
                                      nn.SiLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_captums_other_nonlinear_rules_and_its_fallback():
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    g = torch.Generator().manual_seed(7)
    x, b = torch.randn(2, 3, 14, 12, generator=g, dtype=torch.float64), torch.randn(3, 3, 14, 12, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 3])
    sites = list(range(-1, 12))
    out = attribute_layers(model, x, t, ["deepliftshap"], sites, baselines=b)["deepliftshap"]
    for site in sites:
        if site == -1:
            expected = captum_attr.DeepLiftShap(model).attribute(x, b, target=t).sum(1)
        else:
            expected = captum_attr.LayerDeepLiftShap(model, model.features[site]).attribute(x, b, target=t).sum(1)
        assert rel_err(out[site], expected.detach()) < TOL, site
