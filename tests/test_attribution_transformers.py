"""Vision transformers: the site layouts, and parity with pytorch-grad-cam and captum on a small ViT and Swin.

Fixtures (float64): torchvision's VisionTransformer and SwinTransformer classes with small dimensions, random
weights, and a re-drawn head (torchvision's ViT head starts at zero, which would make every map zero). The
libraries hook the modules directly; their maps are put on the grid by a reshape written here, independently
of layersweep/attribution/layouts.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum import attr as captum_attr
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from layersweep.attribution import attribute_layers
from layersweep.attribution.engine import deeplift_rules
from layersweep.attribution.layouts import from_grid, to_grid
from layersweep.attribution.sites import arch_site_table, site_table
from layersweep.errors import LayersweepError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
CAMS = [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"), ("layercam", "LayerCAM"),
        ("xgradcam", "XGradCAM"), ("hirescam", "HiResCAM")]


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    scale = b.abs().max()
    assert scale > 0, "the reference is identically zero: the comparison would check nothing"
    return float((a - b).abs().max() / scale)


def vit_tokens_to_grid(t):
    """The test's own reshape of ViT tokens: (B, 1 + h*w, C) -> (B, C, h, w), by explicit indexing."""
    B, N, C = t.shape
    side = int(round((N - 1) ** 0.5))
    out = torch.empty((B, C, side, side), dtype=t.dtype)
    for r in range(side):
        for c in range(side):
            out[:, :, r, c] = t[:, 1 + r * side + c, :]
    return out


def swin_to_grid(t):
    return torch.einsum("bhwc->bchw", t)


def randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            elif "norm" in name or ".ln" in name or name.startswith("ln"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:  # biases, class token, position embedding, relative position bias table
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.double().eval()


@pytest.fixture(scope="module")
def vit():
    model = randomise(VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16,
                                        mlp_dim=32, num_classes=5), 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((3, 3, 32, 32), generator=g, dtype=torch.float64)
    b = torch.randn((2, 3, 32, 32), generator=g, dtype=torch.float64) * 0.5
    return dict(model=model, x=x, b=b, t=torch.tensor([0, 3, 1]))


@pytest.fixture(scope="module")
def swin():
    model = randomise(SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 2],
                                      window_size=[4, 4], num_classes=5), 0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn((3, 3, 32, 32), generator=g, dtype=torch.float64)
    b = torch.randn((2, 3, 32, 32), generator=g, dtype=torch.float64) * 0.5
    return dict(model=model, x=x, b=b, t=torch.tensor([4, 0, 2]))


# ----------------------------------------------------------------------------- layouts
def test_tokens_layout_maps_each_token_to_its_grid_position():
    """Token k (k >= 1) of a (B, 1 + h*w, C) sequence is grid cell ((k-1) // w, (k-1) % w); token 0 is dropped."""
    B, side, C = 2, 3, 4
    N = 1 + side * side
    tokens = torch.arange(B * N * C, dtype=torch.float64).reshape(B, N, C)  # value = (b * N + k) * C + c
    grid = to_grid("tokens", tokens)
    assert grid.shape == (B, C, side, side)
    for b in range(B):
        for k in range(1, N):
            for c in range(C):
                assert grid[b, c, (k - 1) // side, (k - 1) % side] == (b * N + k) * C + c
    # writing the grid back keeps the clean class token and puts every patch where it came from
    back = from_grid("tokens", grid * 10, tokens[:1])
    assert torch.equal(back[:, 0], tokens[:1, 0].expand(B, C))
    assert torch.equal(back[:, 1:], tokens[:, 1:] * 10)
    # leading pair dimensions pass through
    assert torch.equal(to_grid("tokens", tokens[None].expand(5, B, N, C))[3], grid)


def test_channels_last_layout_permutes():
    t = torch.arange(2 * 3 * 5 * 4, dtype=torch.float64).reshape(2, 3, 5, 4)  # (B, H, W, C)
    grid = to_grid("channels_last", t)
    assert grid.shape == (2, 4, 3, 5)
    assert grid[1, 2, 0, 4] == t[1, 0, 4, 2]
    assert torch.equal(from_grid("channels_last", grid, t), t)


def test_tokens_without_a_square_grid_are_refused():
    with pytest.raises(LayersweepError, match="square patch grid"):
        to_grid("tokens", torch.zeros(1, 7, 4))


# ----------------------------------------------------------------------------- sites
def test_transformer_sites_and_sets():
    vit_table = arch_site_table("vit_b_16")
    assert len(vit_table) == 24 and vit_table.names[:2] == ["encoder.layers.encoder_layer_0.ln_1",
                                                            "encoder.layers.encoder_layer_0.add_1"]
    assert vit_table.blocks[-1] == "encoder.layers.encoder_layer_11" and {s.layout for s in vit_table.sites} == {"tokens"}
    swin_table = arch_site_table("swin_t")
    assert swin_table.stages == ["features.1", "features.3", "features.5", "features.7"]
    assert len(swin_table.blocks) == 12 and swin_table[swin_table.aliases["features.3"]].name == "features.3.1.add_1"
    assert arch_site_table("vit_b_32")[0].channels == 768 and arch_site_table("swin_v2_t")[0].channels == 96


# ----------------------------------------------------------------------------- parity with pytorch-grad-cam
def _vit_modules(model):
    out = {}
    for i, block in enumerate(model.encoder.layers):
        out[f"encoder.layers.encoder_layer_{i}.ln_1"] = block.ln_1
        out[f"encoder.layers.encoder_layer_{i}"] = block
    return out


def _swin_modules(model):
    return {f"features.{k}.{i}": model.features[k][i] for k in (1, 3) for i in range(2)}


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_cams_match_pytorch_grad_cam_at_every_block(vit, swin, monkeypatch, family):
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)  # raw cams
    fx = vit if family == "vit" else swin
    model, x, t = fx["model"], fx["x"], fx["t"]
    modules = _vit_modules(model) if family == "vit" else _swin_modules(model)
    reshape = vit_tokens_to_grid if family == "vit" else swin_to_grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the last ViT block's zero maps warn (tested below)
        out = attribute_layers(model, x, t, [m for m, _ in CAMS], list(modules))
    compared = 0
    for method, cls in CAMS:
        for site, module in modules.items():
            with getattr(pgc, cls)(model=model, target_layers=[module], reshape_transform=reshape) as cam:
                expected = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
            if not np.any(expected):
                assert not out[method][site].any(), (method, site)
                continue
            assert rel_err(out[method][site], torch.from_numpy(expected)) < 1e-6, (method, site)
            compared += 1
    assert compared >= len(CAMS) * (len(modules) - 1)


def test_last_vit_block_has_a_zero_patch_gradient_and_warns(vit):
    """Under class-token pooling only token 0 of the last block reaches the head: the patch tokens' gradient
    is exactly zero, so the gradient maps there are zero, and the engine says so."""
    model, x, t = vit["model"], vit["x"], vit["t"]
    last = "encoder.layers.encoder_layer_2"
    with pytest.warns(UserWarning, match=r"constant map at encoder\.layers\.encoder_layer_2 "):
        out = attribute_layers(model, x, t, ["gradcam"], [last, "encoder.layers.encoder_layer_2.ln_1"])
    assert not out["gradcam"][last].any()
    assert out["gradcam"]["encoder.layers.encoder_layer_2.ln_1"].any()


# ----------------------------------------------------------------------------- DeepLiftShap with the fallback
@pytest.mark.parametrize("family,sites", [
    ("vit", ["encoder.layers.encoder_layer_0.ln_1", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]),
    ("swin", ["features.1.0", "features.2", "features.3.0"])])
def test_deepliftshap_fallback_matches_captum(vit, swin, family, sites):
    """No node of these networks has a captum rule (GELU, LayerNorm, attention): captum back-propagates the
    plain gradient of each half at its own point, and so does the engine."""
    fx = vit if family == "vit" else swin
    model, x, b, t = fx["model"], fx["x"], fx["b"], fx["t"]
    out = attribute_layers(model, x, t, ["deepliftshap"], sites, baselines=b)["deepliftshap"]
    reshape = vit_tokens_to_grid if family == "vit" else swin_to_grid
    for site in sites:
        module = _vit_modules(model)[site] if family == "vit" else model.get_submodule(site)
        raw = captum_attr.LayerDeepLiftShap(model, module).attribute(x, b, target=t)
        assert rel_err(out[site], reshape(raw).sum(1)) < 1e-8, site
    assert deeplift_rules(model, sites) == "gradient_fallback"
    # in chunks of one image (separate forwards of images and baselines: the shape nodes see other batch sizes)
    chunked = attribute_layers(model, x, t, ["deepliftshap"], sites, baselines=b, max_pairs=1)["deepliftshap"]
    for site in sites:
        assert torch.allclose(chunked[site], out[site], rtol=1e-10, atol=1e-12), site


def test_ablation_and_liftcam_write_the_grid_back_with_the_clean_class_token(vit):
    """AblationCAM at a ViT site sets one channel of every patch token to pytorch-grad-cam's ablation value
    (the patches' minimum - 1e7: a block output is not post-ReLU) and keeps the class token: checked against a
    forward hook doing exactly that on the model, for every channel (a naive loop)."""
    model, x, t = vit["model"], vit["x"][:1], vit["t"][:1]
    site = "encoder.layers.encoder_layer_0"
    block = model.encoder.layers[0]
    with pytest.warns(UserWarning, match="ablation value"):
        _, w = attribute_layers(model, x, t, ["ablationcam", "liftcam"], [site], return_weights=True)
    with torch.no_grad():
        y = model(x)[0, t[0]]
        expected = []
        for c in range(16):
            def ablate(m, i, o, c=c):
                o = o.clone()
                o[:, 1:, c] = o[:, 1:].min() - 1e7
                return o
            h = block.register_forward_hook(ablate)
            expected.append((y - model(x)[0, t[0]]) / y)  # pytorch-grad-cam's ablation weight
            h.remove()
        keep = {}

        def grab(m, i, o):
            o.requires_grad_(True)
            keep["a"] = o
            return o
    assert rel_err(w["ablationcam"][site][0], torch.stack(expected)) < 1e-8
    # LIFT-CAM with its zero reference on the patch grid: no node above has a captum rule, so the multiplier
    # is the plain gradient at the image and the weights are sum over patches of A * dy/dA (class token: 0)
    h = block.register_forward_hook(grab)
    y = model(x)[0, t[0]]
    h.remove()
    (grad,) = torch.autograd.grad(y, keep["a"])
    expected = (keep["a"] * grad)[0, 1:].sum(0).detach()
    assert rel_err(w["liftcam"][site][0], expected) < 1e-8


def test_tiny_vit_arch_is_built_by_its_adapter():
    from layersweep.model import build_architecture
    model = build_architecture("vit_tiny", n_classes=3).eval()
    table = site_table(model)
    assert model.heads.head.out_features == 3 and len(table) == 4 and table.layouts


def test_deeplift_rules_are_exact_on_a_relu_network():
    import torchvision
    with torch.device("meta"):
        resnet = torchvision.models.resnet18(num_classes=3).eval()
    assert deeplift_rules(resnet, "blocks") == "exact"


def test_vit_crop_size_is_checked_and_costs_count_tokens():
    from layersweep.cost import network_facts
    from layersweep.model import check_input_size
    with pytest.raises(LayersweepError, match=r"'data.crop_size' is 64, but model.arch 'vit_b_16' takes 224-px"):
        check_input_size("vit_b_16", 64)
    check_input_size("swin_t", 64)
    with torch.device("meta"):
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                  mlp_dim=32, num_classes=5).eval()
    facts = network_facts(model, 32)
    assert [(l.channels, l.height, l.width) for l in facts.layers] == [(16, 4, 4)] * 4
    # per crop: the patch conv, then per block 17 tokens x (attention projections + MLP) and QK^T, AV; the head
    conv = 16 * 16 * 3 * 8 * 8
    block = 4 * 17 * 16 * 16 + 2 * 17 * 17 * 16 + 17 * 2 * 16 * 32
    assert facts.total_macs == conv + 2 * block + 16 * 5


def test_vit_deepliftshap_at_the_input_matches_captum(vit):
    """Down to the input, the DeepLift backward crosses ViT's `x.reshape(n, C, h * w)`, whose n is read off the
    batch (images and baselines, not the pairs): its backward is written out, so the pairs fit."""
    model, x, b, t = vit["model"], vit["x"], vit["b"], vit["t"]
    out = attribute_layers(model, x, t, ["deepliftshap"], [-1, "encoder.layers.encoder_layer_0"], baselines=b,
                           max_pairs=4)["deepliftshap"]
    expected = captum_attr.DeepLiftShap(model).attribute(x, b, target=t).sum(1)
    assert rel_err(out[-1], expected) < 1e-8
