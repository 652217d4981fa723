"""LIFT-CAM, AblationCAM and SHAP-CAM|Pi| against independent computations.

- liftcam: captum `DeepLift(tail_l).attribute(A_l, baselines=0)` at every layer (tail_l = the network after l).
- ablationcam: pytorch-grad-cam's AblationCAM raw cams (before min-max and resize) on a layer subset.
- shapcam_pi: captum `ShapleyValueSampling(tail_l)` over channels with the same orderings (torch.manual_seed
  of the crop's seed reproduces captum's draws), and exact Shapley values by subset enumeration on a tiny net.
Fixtures: random non-zero biases, non-square inputs; a narrowed VGG11 head (as test_attribution_parity.py).
"""
from __future__ import annotations

import copy
import itertools
import math
import warnings

import captum.attr as captum_attr
import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from layersweep.attribution import attribute_layers
from layersweep.attribution.graph import trace
from layersweep.attribution.sites import site_table
from layersweep.attribution.perturb import crop_seed, layer_groups
from layersweep.errors import LayersweepError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TOL = 1e-4


def rel_err(a, b) -> float:
    a, b = a.detach().double(), torch.as_tensor(b).detach().double()
    scale = b.abs().max()
    assert scale > 0, "reference is identically zero: the comparison would check nothing"
    return float((a - b).abs().max() / scale)


def _vgg(seed=0, head=64):
    torch.manual_seed(seed)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, head), nn.ReLU(True), nn.Dropout(), nn.Linear(head, 20))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    model.eval()
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model, ref


def _tail(ref, layer):
    return nn.Sequential(*list(ref.features)[layer + 1:], ref.avgpool, nn.Flatten(1), ref.classifier)


def _acts(ref, x, layer):
    with torch.no_grad():
        return x.clone() if layer == -1 else nn.Sequential(*list(ref.features)[:layer + 1])(x)


@pytest.fixture(scope="module")
def vgg():
    model, ref = _vgg()
    x = torch.randn(3, 3, 32, 48)  # non-square
    t = torch.tensor([1, 5, 7])
    return dict(model=model, ref=ref, x=x, t=t)


def test_liftcam_matches_captum_deeplift_on_the_tail_at_every_layer(vgg):
    layers = list(range(-1, 21))
    # max_pairs=2 cuts the batch of 3 across chunks
    maps, weights = attribute_layers(vgg["model"], vgg["x"], vgg["t"], ["liftcam"], layers, max_pairs=2,
                                     return_weights=True)
    for layer in layers:
        a = _acts(vgg["ref"], vgg["x"], layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = captum_attr.DeepLift(_tail(vgg["ref"], layer)).attribute(a, baselines=torch.zeros_like(a),
                                                                         target=vgg["t"])
        alpha = c.sum(dim=(2, 3)).detach()
        assert rel_err(weights["liftcam"][layer], alpha) < TOL, layer
        cam = (alpha[:, :, None, None] * a).sum(1).clamp(min=0)
        if cam.abs().max() > 0:
            assert rel_err(maps["liftcam"][layer], cam) < TOL, layer


@pytest.fixture
def raw_cams(monkeypatch):
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


ABLATION_LAYERS = [2, 13, 20]  # MaxPool, conv, MaxPool (the library re-runs the whole net per channel)


def test_ablationcam_matches_pytorch_grad_cam(vgg, raw_cams):
    x, t = vgg["x"][:2], vgg["t"][:2]
    out = attribute_layers(vgg["model"], x, t, ["ablationcam"], ABLATION_LAYERS, perturb_batch=37)
    for layer in ABLATION_LAYERS:
        if not isinstance(vgg["ref"].features[layer], nn.Conv2d):  # the library zeroes only if the map has a 0
            assert _acts(vgg["ref"], x, layer).amin(dim=(1, 2, 3)).eq(0).all()
        with pgc.AblationCAM(model=vgg["ref"], target_layers=[vgg["ref"].features[layer]]) as cam:
            ref = torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in t]))
        assert rel_err(out["ablationcam"][layer], ref) < TOL, layer


def _svs(tail, a, target, seed, n):
    """captum ShapleyValueSampling over the channels of a (1, C, H, W), orderings from torch.manual_seed(seed)."""
    C = a.shape[1]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = captum_attr.ShapleyValueSampling(tail).attribute(
            a, baselines=0.0, target=target, feature_mask=torch.arange(C).view(1, C, 1, 1), n_samples=n,
            perturbations_per_eval=64)
    return attr[0, :, 0, 0]


SHAPLEY_LAYERS = [5, 16, 17, 20]


def test_shapcam_pi_matches_captum_shapley_value_sampling(vgg):
    ids = ["crop_a", "crop_b"]
    x, t = vgg["x"][:2], vgg["t"][:2]
    maps, weights = attribute_layers(vgg["model"], x, t, ["shapcam_pi"], SHAPLEY_LAYERS, seed=7, crop_ids=ids,
                                     options={"shapcam_pi": {"orderings": 2}}, perturb_batch=50,
                                     return_weights=True)
    table = site_table(vgg["model"])
    node_groups = layer_groups(trace(vgg["model"]))
    # the seed key of a group is the site index of its first node (features.i on a VGG)
    position_of = {site.node: site.index for site in table.sites} | {0: -1}
    groups = {layer: (position_of[node_groups[table.node_of(layer)][0]],) for layer in SHAPLEY_LAYERS}
    for layer in SHAPLEY_LAYERS:
        a = _acts(vgg["ref"], x, layer)
        for i, crop in enumerate(ids):
            seed = crop_seed(7, crop, "shapcam_pi", groups[layer][0])
            ref = _svs(_tail(vgg["ref"], layer), a[i:i + 1], int(t[i]), seed, 2)
            assert rel_err(weights["shapcam_pi"][layer][i], ref) < TOL, (layer, crop)
    # group sharing: the conv 16 and its ReLU 17 play the same game
    assert torch.equal(weights["shapcam_pi"][16], weights["shapcam_pi"][17])


def test_shapcam_pi_shard_does_not_depend_on_batch_or_neighbours(vgg):
    kw = dict(seed=1, options={"shapcam_pi": {"orderings": 1}}, return_weights=True)
    _, w_all = attribute_layers(vgg["model"], vgg["x"], vgg["t"], ["shapcam_pi"], [18], crop_ids=["a", "b", "c"], **kw)
    _, w_one = attribute_layers(vgg["model"], vgg["x"][2:], vgg["t"][2:], ["shapcam_pi"], [18], crop_ids=["c"],
                                perturb_batch=7, **kw)
    assert torch.allclose(w_all["shapcam_pi"][18][2:], w_one["shapcam_pi"][18], rtol=1e-5, atol=1e-6)
    _, w_other = attribute_layers(vgg["model"], vgg["x"][2:], vgg["t"][2:], ["shapcam_pi"], [18], crop_ids=["z"], **kw)
    assert not torch.allclose(w_other["shapcam_pi"][18], w_one["shapcam_pi"][18])  # the seed does use the id


class Tiny(nn.Module):
    """Conv(3->5)-ReLU-MaxPool, then Conv(5->4)-ReLU-GAP-Linear: 5 channel players at features.0-2."""

    def __init__(self, dead_channel=None):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(5, 4, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, 3)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.bias.uniform_(-0.3, 0.3)
            if dead_channel is not None:  # a channel whose ReLU output is 0 everywhere
                self.features[0].weight[dead_channel] = 0
                self.features[0].bias[dead_channel] = -1.0

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _exact_shapley(value, n):
    phi = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            for s in itertools.combinations(others, r):
                wgt = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                phi[i] += wgt * (value(set(s) | {i}) - value(set(s)))
    return phi


def test_shapcam_pi_over_all_orderings_is_the_exact_shapley_value():
    model = Tiny().double().eval()
    x, t = torch.randn(1, 3, 6, 10, dtype=torch.float64), torch.tensor([2])
    layer = 2
    a = _acts(model, x, layer)
    tail = _tail(model, layer)

    def value(s):
        keep = torch.zeros(5, dtype=torch.float64)
        keep[list(s)] = 1
        with torch.no_grad():
            return float(tail(a * keep[None, :, None, None])[0, 2])

    exact = _exact_shapley(value, 5)
    # 5! = 120 orderings, sampled with replacement: the estimate averages orderings; check it against the
    # ordering-by-ordering recomputation instead, and the full permutation average against the enumeration
    perms = torch.stack([torch.tensor(p) for p in itertools.permutations(range(5))])
    by_perm = torch.zeros(5, dtype=torch.float64)
    for p in perms:
        prev, coalition = value(set()), set()
        for k in p.tolist():
            coalition.add(k)
            cur = value(coalition)
            by_perm[k] += cur - prev
            prev = cur
    assert torch.allclose(by_perm / len(perms), exact, atol=1e-12)
    # the engine with the orderings it draws equals the naive marginal-contribution loop with the same draws
    _, w = attribute_layers(model, x, t, ["shapcam_pi"], [layer], options={"shapcam_pi": {"orderings": 4}},
                            crop_ids=["q"], seed=0, return_weights=True)
    gen = torch.Generator().manual_seed(crop_seed(0, "q", "shapcam_pi", 0))
    naive = torch.zeros(5, dtype=torch.float64)
    for _ in range(4):
        prev, coalition = value(set()), set()
        for k in torch.randperm(5, generator=gen).tolist():
            coalition.add(k)
            cur = value(coalition)
            naive[k] += cur - prev
            prev = cur
    assert torch.allclose(w["shapcam_pi"][layer][0], naive / 4, atol=1e-12)
    # efficiency, for every ordering: the values sum to F(A) - F(0)
    assert float(w["shapcam_pi"][layer][0].sum()) == pytest.approx(value(set(range(5))) - value(set()), abs=1e-12)


def test_dead_channel_gets_exactly_zero_and_group_layers_share_weights():
    model = Tiny(dead_channel=3).eval()
    x, t = torch.randn(2, 3, 6, 10), torch.tensor([0, 1])
    _, w = attribute_layers(model, x, t, ["shapcam_pi", "ablationcam"], [0, 1, 2],
                            options={"shapcam_pi": {"orderings": 3}}, return_weights=True)
    for name in ("shapcam_pi", "ablationcam"):
        assert w[name][1][:, 3].eq(0).all(), name
        assert torch.equal(w[name][0], w[name][1]) and torch.equal(w[name][1], w[name][2]), name
    assert w["ablationcam"][1][:, [0, 1, 2, 4]].ne(0).any()


def test_bad_method_options_are_one_sentence():
    model = Tiny().eval()
    x, t = torch.randn(1, 3, 6, 10), torch.tensor([0])
    with pytest.raises(LayersweepError, match=r"'attribution.options.shapcam_pi.samples' is not an option"):
        attribute_layers(model, x, t, ["shapcam_pi"], [2], options={"shapcam_pi": {"samples": 3}})
    with pytest.raises(LayersweepError, match=r"'attribution.options.shapcam_pi.orderings' is 0; it must be an integer in 1..100000"):
        attribute_layers(model, x, t, ["shapcam_pi"], [2], options={"shapcam_pi": {"orderings": 0}})
    with pytest.raises(LayersweepError, match=r"perturb_batch is 0"):
        attribute_layers(model, x, t, ["ablationcam"], [2], perturb_batch=0)


def test_attribute_crops_seeds_by_crop_id_and_returns_weights(tmp_path):
    from layersweep.attribution import attribute_crops, read_attribution_shard, write_attribution_shard

    model = Tiny().eval()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 6, 10, 3), dtype=np.uint8)
    targets = np.array([0, 1, 2, 0, 1])
    ids = [f"c{i}" for i in range(5)]
    kw = dict(batch_size=2, max_pairs=4, device="cpu", progress=False, options={"shapcam_pi": {"orderings": 2}},
              seed=5, return_weights=True)
    a = attribute_crops(model, crops, targets, None, ["shapcam_pi", "liftcam"], [1, 4], crop_ids=ids, **kw)
    kw["batch_size"] = 3
    b = attribute_crops(model, crops[3:], targets[3:], None, ["shapcam_pi", "liftcam"], [1, 4], crop_ids=ids[3:], **kw)
    for name in ("shapcam_pi", "liftcam"):
        for layer in (1, 4):
            assert a["weights"][name][layer].shape == (5, 5 if layer == 1 else 4)
            np.testing.assert_allclose(a["weights"][name][layer][3:], b["weights"][name][layer], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(a["maps"][name][layer][3:], b["maps"][name][layer], rtol=1e-5, atol=1e-7)
    path = tmp_path / "s.npz"
    write_attribution_shard(path, "shapcam_pi", ids, targets, a["logit"], a["prob"], a["maps"]["shapcam_pi"],
                            weights_by_layer=a["weights"]["shapcam_pi"])
    back = read_attribution_shard(path)
    assert sorted(back["weights"]) == [1, 4]
    np.testing.assert_array_equal(back["weights"][4], a["weights"]["shapcam_pi"][4])
    with pytest.raises(LayersweepError, match="weights of layer 4"):
        write_attribution_shard(tmp_path / "bad.npz", "shapcam_pi", ids, targets, a["logit"], a["prob"],
                                a["maps"]["shapcam_pi"], weights_by_layer={4: np.zeros((2, 4))})
    assert not (tmp_path / "bad.npz").exists()
    kw["options"] = None
    # float64: the model and the crops are cast; LIFT-CAM's maps agree with float32 to round-off
    c = attribute_crops(Tiny().eval(), crops, targets, None, ["liftcam"], [1, 4], crop_ids=ids, dtype="float64", **kw)
    np.testing.assert_allclose(c["maps"]["liftcam"][4], a["maps"]["liftcam"][4], rtol=1e-4, atol=1e-5)
    with pytest.raises(LayersweepError, match="attribution.dtype"):
        attribute_crops(model, crops, targets, None, ["liftcam"], [1], dtype="float16", **kw)


SCORECAM_LAYERS = [2, 20]  # 64 and 512 channels; the library runs one full forward per channel


def test_scorecam_matches_pytorch_grad_cam(vgg, raw_cams):
    x, t = vgg["x"][:2], vgg["t"][:2]
    out = attribute_layers(vgg["model"], x, t, ["scorecam"], SCORECAM_LAYERS, perturb_batch=40)
    for layer in SCORECAM_LAYERS:
        with pgc.ScoreCAM(model=vgg["ref"], target_layers=[vgg["ref"].features[layer]]) as cam:
            ref = torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in t]))
        assert rel_err(out["scorecam"][layer], ref) < TOL, layer


@pytest.mark.parametrize("absent,value", [("zero", "prob"), ("mean", "logit")])
def test_shapcam_matches_exact_shapley_and_captum_sampling(absent, value):
    """Positions of the 2x5 MaxPool output of the tiny net are the 10 players."""
    model = Tiny().double().eval()
    x, t = torch.randn(2, 3, 4, 10, dtype=torch.float64), torch.tensor([2, 0])
    layer = 2
    a = _acts(model, x, layer)
    tail = _tail(model, layer)
    f = (lambda z: torch.softmax(tail(z), 1)) if value == "prob" else tail
    opts = {"shapcam": {"permutations": 3, "absent": absent, "value": value}}
    maps = attribute_layers(model, x, t, ["shapcam"], [layer], options=opts, crop_ids=["p", "q"], seed=4)
    h, w = a.shape[-2:]
    for i, crop in enumerate(["p", "q"]):
        base = a[i:i + 1].mean(dim=(2, 3), keepdim=True).expand_as(a[i:i + 1]) if absent == "mean" else 0.0
        torch.manual_seed(crop_seed(4, crop, "shapcam", layer))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = captum_attr.ShapleyValueSampling(f).attribute(
                a[i:i + 1], baselines=base, target=int(t[i]), feature_mask=torch.arange(h * w).view(1, 1, h, w),
                n_samples=3)[0, 0]
        assert rel_err(maps["shapcam"][layer][i], ref) < TOL, crop
    # all orderings: exact Shapley by subset enumeration, on 6 players (a 2x3 grid)
    x6 = torch.randn(1, 3, 4, 6, dtype=torch.float64)
    a6 = _acts(model, x6, layer)
    base6 = a6.mean(dim=(2, 3), keepdim=True).expand_as(a6) if absent == "mean" else torch.zeros_like(a6)

    def v(s):
        keep = torch.zeros(6, dtype=torch.bool)
        keep[list(s)] = True
        with torch.no_grad():
            return float(f(torch.where(keep.view(1, 1, 2, 3), a6, base6))[0, 1])

    exact = _exact_shapley(v, 6)
    est = attribute_layers(model, x6, torch.tensor([1]), ["shapcam"], [layer],
                           options={"shapcam": {"permutations": 2000, "absent": absent, "value": value}})["shapcam"][layer]
    # efficiency holds per ordering, so exactly for the estimate; the values converge to the exact ones
    assert float(est.sum()) == pytest.approx(v(range(6)) - v(()), abs=1e-10)
    assert float((est.flatten() - exact).abs().max()) < 0.1 * float(exact.abs().max())
