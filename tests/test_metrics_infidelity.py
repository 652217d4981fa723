"""Infidelity against captum's `captum.metrics.infidelity` with the same (seeded) perturbations, every layer's
maps from one set of forwards against captum called once per layer."""
import pytest
import torch
from captum.metrics import infidelity
from torch import nn

from layersweep.errors import LayersweepError
from layersweep.metrics.infidelity import (check_infidelity_options, gaussian_perturbations,
                                           infidelity_forward_diffs, infidelity_scores)

pytestmark = pytest.mark.usefixtures("one_thread")
H, W = 10, 13  # non-square
K = 6


def tiny_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(5, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(24, 7))
    with torch.no_grad():
        for m in net:
            if hasattr(m, "bias") and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def setup(dtype=torch.float64, n=3, layers=3, std=0.05):
    net = tiny_net().to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, H, W, generator=g).to(dtype)
    targets = torch.tensor([1, 4, 6, 0, 2][:n])
    maps = torch.rand(layers * n, H, W, generator=g).to(dtype)  # layer-major: layer l, crops 0..n-1
    ci = torch.arange(n).repeat(layers)

    def perturbations(i):  # a fresh generator per call: the same draws every time
        return gaussian_perturbations(x[i], K, std, torch.Generator().manual_seed(1000 + i))

    return net, x, targets, maps, ci, perturbations


def captum_per_layer(net, x, targets, maps, perturbations, layers, **kw):
    """captum once per layer, its perturb_func returning the same perturbations (crop-major, captum's
    repeat_interleave order) and x - I as the perturbed input (ML4CV_XAI's perturb_fn)."""
    n = len(x)
    noise = torch.cat([perturbations(i) for i in range(n)])
    out = []
    for layer in range(layers):
        attr = maps[layer * n:(layer + 1) * n][:, None].expand(-1, 3, -1, -1)
        out.append(infidelity(net, lambda inp: (noise, inp - noise), x, attr, target=targets,
                              n_perturb_samples=K, **kw))
    return torch.cat(out)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("output", ["logit", "prob"])
def test_equals_captum_infidelity(normalize, output):
    net, x, targets, maps, ci, pert = setup()
    forward = net if output == "logit" else (lambda inp: torch.softmax(net(inp), dim=1))
    ref = captum_per_layer(forward, x, targets, maps, pert, 3, normalize=normalize)
    res = infidelity_scores(net, x, maps, targets, perturbations=pert, crop_index=ci, normalize=normalize,
                            output=output, batch_size=5)  # batches cut across crops
    torch.testing.assert_close(res["infidelity"], ref.double(), rtol=1e-9, atol=0)
    assert res["diffs"].shape == (3, K)
    assert ref.std() > 0.01 * ref.abs().mean()  # the maps give different values: the comparison bites


def test_equals_captum_in_float32_within_1e_4():
    net, x, targets, maps, ci, pert = setup(dtype=torch.float32)
    ref = captum_per_layer(net, x, targets, maps, pert, 3, normalize=True)
    res = infidelity_scores(net, x, maps, targets, perturbations=pert, crop_index=ci, normalize=True, batch_size=4)
    torch.testing.assert_close(res["infidelity"], ref.double(), rtol=1e-4, atol=0)


def test_shared_forwards_and_per_crop_draws():
    """The forward differences serve any maps of the crop; a crop's value does not depend on its shard mates
    or on the batch size; normalize makes the value invariant to a positive factor on the map."""
    net, x, targets, maps, ci, pert = setup(n=4, layers=2)
    full = infidelity_scores(net, x, maps, targets, perturbations=pert, crop_index=ci, batch_size=3)
    sel = torch.tensor([6, 1, 5])  # crops 2, 1, 1 of layers 1, 0, 1
    alone = infidelity_scores(net, x, maps[sel], targets, perturbations=pert, crop_index=ci[sel], batch_size=64)
    torch.testing.assert_close(alone["infidelity"], full["infidelity"][sel], rtol=1e-12, atol=0)
    reused = infidelity_scores(net, x, 3.0 * maps, targets, perturbations=pert, crop_index=ci, diffs=full["diffs"])
    torch.testing.assert_close(reused["infidelity"], full["infidelity"], rtol=1e-10, atol=0)
    plain = infidelity_scores(net, x, maps, targets, perturbations=pert, crop_index=ci, normalize=False,
                              diffs=full["diffs"])["infidelity"]
    plain3 = infidelity_scores(net, x, 3.0 * maps, targets, perturbations=pert, crop_index=ci, normalize=False,
                               diffs=full["diffs"])["infidelity"]
    assert torch.all(plain3 > plain)


def test_forward_diffs_are_the_naive_loop():
    net, x, targets, maps, ci, pert = setup(n=2)
    diffs = infidelity_forward_diffs(net, x, targets, pert, output="logit", batch_size=4)
    with torch.no_grad():
        for i in range(2):
            f = net(x[i:i + 1])[0, targets[i]]
            for k in range(K):
                torch.testing.assert_close(diffs[i, k], (f - net((x[i] - pert(i)[k])[None])[0, targets[i]]).double())


def test_gaussian_perturbations_are_seeded_and_scaled():
    x = torch.zeros(3, 40, 50)
    a = gaussian_perturbations(x, 8, 0.003, torch.Generator().manual_seed(5))
    b = gaussian_perturbations(x, 8, 0.003, torch.Generator().manual_seed(5))
    assert a.shape == (8, 3, 40, 50) and torch.equal(a, b)
    assert float(a.std()) == pytest.approx(0.003, rel=0.02) and abs(float(a.mean())) < 1e-4


def test_bad_options_give_one_sentence():
    for args, word in (((0, 0.1, True, "logit"), "n_perturb_samples"), ((5, 0.0, True, "logit"), "std"),
                       ((5, 0.1, "yes", "logit"), "normalize"), ((5, 0.1, True, "softmax"), "output")):
        with pytest.raises(LayersweepError, match=word):
            check_infidelity_options(*args)
    net, x, targets, maps, ci, pert = setup(n=1, layers=1)
    with pytest.raises(LayersweepError, match="size"):
        infidelity_scores(net, x, maps[:, :4], targets, perturbations=pert)


# ---------------------------------------------------------------------------------------------------------------
# the registered metric (metrics/infidelity.py) through score_metric_shard
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [None, 0.3])
def test_registered_infidelity_equals_captum_on_every_row(tmp_path, r):
    """Plain and rescaled rows against captum once per layer, with the per-crop generators' perturbations."""
    from types import SimpleNamespace

    import numpy as np

    from layersweep.metrics.metric_shard import MetricContext, score_metric_shard
    from layersweep.metrics.registry import get_metric
    from layersweep.metrics.rescale import rescale_maps
    from layersweep.metrics import normalize_maps
    from layersweep.preprocess import to_model_input

    from test_metrics_shard import LAYERS, N, SIZE, make_crops, tiny_model, write_shard

    path, arrays = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    opts = {"n_perturb_samples": 5, "std": 0.05}
    df = score_metric_shard("infidelity", model, crops, path, options=opts, r=r, rtol=1e-6, seed=4, batch_size=7,
                            device="cpu", progress=False)
    x = to_model_input(crops)
    t = torch.as_tensor(arrays["target"])
    ctx = SimpleNamespace(seed=4, crop_ids=list(arrays["crop_id"]), name="infidelity", device=torch.device("cpu"))
    noise = torch.cat([gaussian_perturbations(x[i], 5, 0.05, MetricContext.crop_generator(ctx, i, "perturbation"))
                       for i in range(N)])
    for layer in LAYERS:
        maps01, const = normalize_maps(torch.from_numpy(arrays[f"map_{layer}"].astype(np.float32)), (SIZE, SIZE))
        if r is not None:
            maps01 = torch.where(const[:, None, None], maps01, rescale_maps(maps01, r, 1e-6)[0])
        ref = infidelity(model, lambda inp: (noise, inp - noise), x, maps01[:, None].expand(-1, 3, -1, -1),
                         target=t, n_perturb_samples=5, normalize=True).double().numpy()
        got = df.loc[df["layer"] == layer, "infidelity"].to_numpy()
        if layer == 5:
            assert np.isnan(got[1])
            got, ref = got[[0, 2]], ref[[0, 2]]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=0)
        assert (got > 0).all()
    metric = get_metric("infidelity")
    assert metric.rescaled and metric.columns == {"infidelity": "lower"}
    assert metric.cost(metric.options, 21)["forwards_per_map"] == pytest.approx(11 / 21)


def test_reduced_precision_warns(tmp_path):
    from layersweep.metrics.metric_shard import score_metric_shard

    from test_metrics_shard import make_crops, tiny_model, write_shard

    path, _ = write_shard(tmp_path / "s.npz")
    with pytest.warns(UserWarning, match="float32"):
        score_metric_shard("infidelity", tiny_model(), make_crops(), path, options={"n_perturb_samples": 2},
                           precision="bf16", device="cpu", progress=False)
