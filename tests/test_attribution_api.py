"""The engine's API: chunking independence, errors, the stage helper, shards."""
from __future__ import annotations

import copy
import warnings

import captum.attr as captum_attr
import numpy as np
import pytest
import torch
from torch import nn

from layersweep.attribution import (
    attribute_crops,
    attribute_layers,
    available_methods,
    read_attribution_shard,
    register,
    write_attribution_shard,
)
from layersweep.attribution import registry
from layersweep.errors import LayersweepError
from layersweep.preprocess import to_model_input


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TinyVGG(nn.Module):
    """VGG-shaped, every supported module kind, in-place ReLUs as torchvision builds them."""

    def __init__(self, n_classes=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(6 * 9, 12), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(12, n_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyVGG().eval()
    x, b = torch.randn(3, 3, 12, 12), torch.randn(5, 3, 12, 12)
    return model, x, b, torch.tensor([0, 4, 2])


LAYERS = list(range(-1, 6))


def test_available_methods():
    assert {"deepliftshap", "gradcampp", "gradcam", "xgradcam", "layercam"} <= set(available_methods())


@pytest.mark.parametrize("attribute_to", ["output", "input"])
def test_results_do_not_depend_on_max_pairs(tiny, attribute_to):
    model, x, b, t = tiny
    kw = dict(methods=["deepliftshap"], layers=LAYERS, baselines=b, attribute_to=attribute_to)
    ref = attribute_layers(model, x, t, max_pairs=1000, **kw)["deepliftshap"]  # one chunk: all 15 pairs
    # 1..4: more baselines than pairs (baselines sliced per image); 5..14: whole images per chunk
    for max_pairs in (1, 2, 4, 5, 7, 14):
        out = attribute_layers(model, x, t, max_pairs=max_pairs, **kw)["deepliftshap"]
        for layer in LAYERS:
            scale = ref[layer].abs().max()
            assert scale > 0
            assert (out[layer] - ref[layer]).abs().max() <= 1e-5 * scale, (max_pairs, layer)


def test_unknown_method_names_it_and_lists_the_known_ones(tiny):
    model, x, b, t = tiny
    with pytest.raises(LayersweepError, match="'gradcamx'") as err:
        attribute_layers(model, x, t, methods=["gradcampp", "gradcamx"], layers=[0])
    assert "deepliftshap" in str(err.value) and "gradcampp" in str(err.value)


@pytest.mark.parametrize("layer", [6, -2, 100])
def test_out_of_range_layer_names_it(tiny, layer):
    model, x, b, t = tiny
    with pytest.raises(LayersweepError, match=f"layer {layer} "):
        attribute_layers(model, x, t, methods=["gradcampp"], layers=[0, layer])


@pytest.mark.parametrize("layer", ["3", 1.0, True])
def test_non_integer_layer_names_it(tiny, layer):
    model, x, b, t = tiny
    with pytest.raises(LayersweepError, match=repr(layer).replace(".", r"\.")):
        attribute_layers(model, x, t, methods=["gradcampp"], layers=[layer])


def test_other_bad_arguments(tiny):
    model, x, b, t = tiny
    with pytest.raises(LayersweepError, match="baselines"):
        attribute_layers(model, x, t, methods=["deepliftshap"], layers=[0])
    with pytest.raises(LayersweepError, match="baselines"):
        attribute_layers(model, x, t, methods=["deepliftshap"], layers=[0], baselines=b[:, :, :8])
    with pytest.raises(LayersweepError, match="'inputs'"):
        attribute_layers(model, x, t, methods=["gradcampp"], layers=[0], attribute_to="inputs")
    with pytest.raises(LayersweepError, match="max_pairs"):
        attribute_layers(model, x, t, methods=["deepliftshap"], layers=[0], baselines=b, max_pairs=0)
    with pytest.raises(LayersweepError, match="target class 6"):
        attribute_layers(model, x, torch.tensor([0, 6, 1]), methods=["gradcampp"], layers=[0])
    with pytest.raises(LayersweepError, match="Branchy cannot be traced"):
        class Branchy(TinyVGG):  # control flow on a tensor's value: torch.fx cannot trace it
            def forward(self, x):
                return super().forward(x) if x.sum() > 0 else super().forward(-x)
        attribute_layers(Branchy().eval(), x, t, methods=["gradcampp"], layers=[0])


def test_engine_does_not_touch_the_model(tiny):
    model, x, b, t = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attribute_layers(model, x, t, methods=["deepliftshap", "gradcampp"], layers=LAYERS, baselines=b)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_inplace_relus_do_not_change_the_maps(tiny):
    """The engine's activation is the module's true output whatever the ReLUs' `inplace` flag."""
    model, x, b, t = tiny
    flipped = copy.deepcopy(model)
    for m in flipped.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    kw = dict(methods=["deepliftshap", "gradcampp"], layers=LAYERS, baselines=b)
    a, c = attribute_layers(model, x, t, **kw), attribute_layers(flipped, x, t, **kw)
    for method in a:
        for layer in LAYERS:
            assert torch.equal(a[method][layer], c[method][layer])


def test_gradient_pass_matches_a_naive_per_layer_loop(tiny):
    """LayerCAM = sum_c relu(dlogit/dA) * A: check it against autograd, one layer at a time."""
    model, x, b, t = tiny
    maps = attribute_layers(model, x, t, methods=["layercam"], layers=LAYERS)["layercam"]
    for layer in LAYERS:
        act, grad = _naive_activation_and_grad(model, x, t, layer)
        expected = (grad.clamp(min=0) * act).sum(1).clamp(min=0)
        assert torch.allclose(maps[layer], expected, rtol=1e-5, atol=1e-7), layer


def _naive_activation_and_grad(model, x, t, layer):
    """features[layer]'s output and d(target logit)/d(output), by plain autograd one layer at a time."""
    h = x.clone().requires_grad_(True)
    act = h
    for i, module in enumerate(model.features):
        h = nn.functional.relu(h) if isinstance(module, nn.ReLU) else module(h)
        if i == layer:
            act = h
    logits = model.classifier(torch.flatten(model.avgpool(h), 1))
    (grad,) = torch.autograd.grad(logits[torch.arange(len(t)), t].sum(), act)
    return act.detach(), grad


def test_a_registered_deeplift_method_gets_the_per_pair_terms(tiny, monkeypatch):
    """A new DeepLift-family method receives each (image, baseline) pair's delta and multiplier: |sum_c d*m|
    per pair, averaged over the baselines, equals captum's LayerDeepLift called once per baseline."""
    model, x, b, t = tiny
    registry._load()  # every built-in method registered before the copy, whatever ran first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test

    @register("test_abs_deeplift", "deeplift")
    def _abs(delta, multiplier):
        return (delta * multiplier).sum(dim=2).abs()

    layers = [0, 2, 4]
    out = attribute_layers(model, x, t, methods=["deepliftshap", "test_abs_deeplift"], layers=layers,
                           baselines=b, max_pairs=4)  # chunks cut across images
    assert "test_abs_deeplift" in available_methods()
    ref_model = copy.deepcopy(model)
    for m in ref_model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns on every call that it sets hooks
        for layer in layers:
            dl = captum_attr.LayerDeepLift(ref_model, ref_model.features[layer])
            per_pair = torch.stack([dl.attribute(x, b[k:k + 1], target=t).sum(1).detach() for k in range(len(b))])
            expected = per_pair.abs().mean(0)
            assert expected.abs().max() > 0 and not torch.allclose(expected, per_pair.mean(0).abs())
            torch.testing.assert_close(out["test_abs_deeplift"][layer], expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_a_registered_gradient_method_gets_activations_and_gradients(tiny, monkeypatch):
    """A new gradient-pass method receives (activations, gradients) of the target logit; the engine clamps at 0."""
    model, x, b, t = tiny
    registry._load()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register("test_neg_gradxact", "gradient")
    def _neg(activations, gradients):
        return -(activations * gradients).sum(dim=1)

    out = attribute_layers(model, x, t, methods=["gradcampp", "test_neg_gradxact"], layers=LAYERS)
    for layer in LAYERS:
        act, grad = _naive_activation_and_grad(model, x, t, layer)
        expected = (-(act * grad).sum(1)).clamp(min=0)
        assert expected.max() > 0 and (expected == 0).any()  # the clamp is exercised both ways
        torch.testing.assert_close(out["test_neg_gradxact"][layer], expected, rtol=1e-5, atol=1e-7)


def test_attribute_crops_batches_like_one_call(tiny):
    model, _, _, _ = tiny
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(5, 12, 12, 3), dtype=np.uint8)
    base = rng.integers(0, 256, size=(3, 12, 12, 3), dtype=np.uint8)
    targets = np.array([1, 0, 5, 3, 3])
    out = attribute_crops(model, crops, targets, base, ["deepliftshap", "gradcampp"], [-1, 2, 5],
                          batch_size=2, max_pairs=4, device="cpu", progress=False)
    x, b = to_model_input(crops), to_model_input(base)
    ref = attribute_layers(model, x, torch.as_tensor(targets), methods=["deepliftshap", "gradcampp"],
                           layers=[-1, 2, 5], baselines=b)
    for method in ref:
        for layer in ref[method]:
            got = out["maps"][method][layer]
            assert got.dtype == np.float32 and got.shape == tuple(ref[method][layer].shape)
            np.testing.assert_allclose(got, ref[method][layer].numpy(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        logits = model(x)  # the model's own forward: independent of the engine's functional walk
    rows = np.arange(5)
    np.testing.assert_allclose(out["logit"], logits.numpy()[rows, targets], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["prob"], torch.softmax(logits, 1).numpy()[rows, targets], rtol=1e-5, atol=1e-7)


def test_attribute_crops_rejects_bad_arrays(tiny):
    model, _, _, _ = tiny
    crops = np.zeros((2, 12, 12, 3), np.uint8)
    with pytest.raises(LayersweepError, match="uint8"):
        attribute_crops(model, crops.astype(np.float32), [0, 1], None, ["gradcampp"], [0],
                        batch_size=2, max_pairs=4, device="cpu", progress=False)
    with pytest.raises(LayersweepError, match="targets"):
        attribute_crops(model, crops, [0], None, ["gradcampp"], [0], batch_size=2, max_pairs=4, device="cpu",
                        progress=False)


# ----------------------------------------------------------------------------- shards
def _shard_inputs(n=4):
    rng = np.random.default_rng(1)
    maps = {-1: rng.normal(size=(n, 12, 12)), 2: rng.normal(size=(n, 6, 6)), 5: rng.normal(size=(n, 3, 3))}
    return dict(method="deepliftshap", crop_ids=[f"000{i}_0" for i in range(n)], targets=rng.integers(0, 20, n),
                logit=rng.normal(size=n), prob=rng.uniform(size=n), maps_by_layer=maps)


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
def test_shard_round_trip(tmp_path, store_dtype):
    args = _shard_inputs()
    path = tmp_path / "shards" / "shard-0.npz"
    write_attribution_shard(path, store_dtype=store_dtype, **args)
    with np.load(path, allow_pickle=False) as npz:  # the exact layout the metric stage reads
        assert set(npz.files) == {"method", "crop_id", "target", "logit", "prob", "layers", "map_-1", "map_2", "map_5"}
        assert npz["method"].shape == () and str(npz["method"]) == "deepliftshap"
        assert npz["crop_id"].dtype.kind == "U" and npz["target"].dtype == np.int64
        assert npz["logit"].dtype == np.float32 and npz["prob"].dtype == np.float32
        assert npz["layers"].dtype == np.int64 and list(npz["layers"]) == [-1, 2, 5]
        assert npz["map_2"].dtype == np.dtype(store_dtype)
    back = read_attribution_shard(path)
    assert back["method"] == "deepliftshap" and list(back["crop_id"]) == args["crop_ids"]
    np.testing.assert_array_equal(back["target"], args["targets"])
    np.testing.assert_allclose(back["logit"], args["logit"], rtol=1e-6)
    np.testing.assert_allclose(back["prob"], args["prob"], rtol=1e-6)
    tol = 1e-3 if store_dtype == "float16" else 1e-6
    for layer, m in args["maps_by_layer"].items():
        np.testing.assert_allclose(back["maps"][layer], m, rtol=tol, atol=tol)
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left behind


def test_shard_writer_rejects_bad_input_and_leaves_nothing(tmp_path):
    path = tmp_path / "shard.npz"
    with pytest.raises(LayersweepError, match="store_dtype"):
        write_attribution_shard(path, store_dtype="bfloat16", **_shard_inputs())
    bad = _shard_inputs()
    bad["prob"] = bad["prob"][:3]
    with pytest.raises(LayersweepError, match="'prob'"):
        write_attribution_shard(path, store_dtype="float32", **bad)
    huge = _shard_inputs()
    huge["maps_by_layer"][2] = huge["maps_by_layer"][2] * 1e6
    with pytest.raises(LayersweepError, match="float16"):
        write_attribution_shard(path, store_dtype="float16", **huge)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_missing_shard_raises_naming_it(tmp_path):
    good = tmp_path / "good.npz"
    write_attribution_shard(good, store_dtype="float32", **_shard_inputs())
    cases = {}
    cases["garbage.npz"] = b"this is not an npz archive"
    cases["truncated.npz"] = good.read_bytes()[: good.stat().st_size // 2]
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(LayersweepError, match=str(p)):
            read_attribution_shard(p)
    # a valid archive with a missing key
    p = tmp_path / "nokey.npz"
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "map_2"}
    np.savez(p, **arrays)
    with pytest.raises(LayersweepError, match=f"{p}.*map_2"):
        read_attribution_shard(p)
    # a member whose bytes are damaged: the zip's CRC-32 check fails when it is read
    p = tmp_path / "badcrc.npz"
    raw = bytearray(good.read_bytes())
    raw[raw.find(b"map_-1.npy") + 300] ^= 0xFF  # inside map_-1's data (np.savez does not compress)
    p.write_bytes(bytes(raw))
    with pytest.raises(LayersweepError, match=str(p)):
        read_attribution_shard(p)
    with pytest.raises(LayersweepError, match="does not exist"):
        read_attribution_shard(tmp_path / "missing.npz")
