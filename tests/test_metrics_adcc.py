"""ADCC's coherency, complexity and their harmonic mean with Average Drop, against a naive loop: one attribution
call and one forward per map, one formula line each (numpy's corrcoef for Pearson's r)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layersweep.attribution import attribute_layers
from layersweep.errors import LayersweepError
from layersweep.metrics.adcc import adcc_combine, adcc_scores, coherency_from_maps, coherency_scores
from layersweep.metrics import normalize_maps
from layersweep.preprocess import denormalize, normalize

from test_metrics_sensitivity import LAYERS, setup  # noqa: F401  (the tiny VGG fixture with random biases)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def engine_attribute(model, method, baselines):
    def attribute(images, targets):
        return attribute_layers(model, images, targets, [method], LAYERS, baselines=baselines)[method]
    return attribute


def maps_of(setup, method):
    """The layer-major stack of normalised maps of every (layer, crop), as the metric stage yields them."""
    model, x, b, t = setup
    raw = attribute_layers(model, x, t, [method], LAYERS, baselines=b)[method]
    maps01, const = zip(*(normalize_maps(raw[l], x.shape[-2:]) for l in LAYERS))
    maps01, const = torch.cat(maps01), torch.cat(const)
    assert not const.any()
    n = len(x)
    return raw, maps01.double(), torch.arange(n).repeat(len(LAYERS)), torch.tensor(LAYERS).repeat_interleave(n)


def naive(setup, method, raw, S, c, layer, mask_space="normalized"):
    """One map: its explanation image, one attribution call, one forward, each formula on its own line."""
    model, x, b, t = setup
    H, W = x.shape[-2:]
    xc, tc = x[c:c + 1], t[c:c + 1]
    e = xc * S if mask_space == "normalized" else normalize(S * denormalize(xc))
    B = attribute_layers(model, e, tc, [method], [layer], baselines=b)[method][layer]
    up = lambda m: F.interpolate(m[None].double(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    coh = (np.corrcoef(up(raw[layer][c:c + 1]).flatten().numpy(), up(B).flatten().numpy())[0, 1] + 1) / 2
    com = float(S.abs().sum()) / (H * W)
    with torch.no_grad():
        Y = float(torch.softmax(model(xc), 1)[0, tc])
        O = float(torch.softmax(model(e), 1)[0, tc])
    ad = max(0.0, Y - O) / Y
    return coh, com, ad, 3 / (1 / coh + 1 / (1 - com) + 1 / (1 - ad))


@pytest.mark.parametrize("method,mask_space", [("deepliftshap", "normalized"), ("gradcampp", "pixel")])
def test_batched_scores_equal_the_naive_loop(setup, method, mask_space):
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, method)
    # batch_size 4 of 15 maps: calls mix crops and layers
    got = adcc_scores(model, x, t, maps01, engine_attribute(model, method, b), map_layers=layers, crop_index=ci,
                      mask_space=mask_space, batch_size=4, forward_batch_size=6)
    for i in range(len(maps01)):
        coh, com, ad, adcc = naive(setup, method, raw, maps01[i], int(ci[i]), int(layers[i]), mask_space)
        assert got["coherency"][i].item() == pytest.approx(coh, abs=1e-6)  # maps01 are float32
        assert got["complexity"][i].item() == pytest.approx(com, abs=1e-12)
        assert got["average_drop"][i].item() == pytest.approx(ad, abs=1e-6)
        assert got["adcc"][i].item() == pytest.approx(adcc, abs=1e-6)
    assert 0 < got["coherency"].min() and got["coherency"].max() < 1 and got["coherency"].std() > 0.01  # not trivial
    assert got["average_drop"].max() > 0


def test_rescaled_masks_are_scored_against_the_maps_of_x(setup):
    """With rescaled S**p, the explanation image uses S**p, coherency still compares with the map of x."""
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, "gradcampp")
    scaled = maps01 ** 2.5
    got = adcc_scores(model, x, t, scaled, engine_attribute(model, "gradcampp", b), map_layers=layers,
                      crop_index=ci, reference=maps01, batch_size=5)
    for i in [0, 7, 14]:
        coh, com, ad, adcc = naive(setup, "gradcampp", raw, scaled[i], int(ci[i]), int(layers[i]))
        assert got["coherency"][i].item() == pytest.approx(coh, abs=1e-6)  # maps01 are float32
        assert got["complexity"][i].item() == pytest.approx(com, abs=1e-12)
        assert got["adcc"][i].item() == pytest.approx(adcc, abs=1e-6)


def test_coherency_of_a_map_with_itself_is_one():
    a = torch.rand(4, 9, 13, dtype=torch.float64)
    np.testing.assert_allclose(coherency_from_maps(a, a).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(coherency_from_maps(a, 3 * a + 2).numpy(), 1.0, atol=1e-12)  # r ignores scaling
    np.testing.assert_allclose(coherency_from_maps(a, -a).numpy(), 0.0, atol=1e-12)


def test_an_attribution_that_returns_the_map_of_x_is_fully_coherent(setup):
    """attribute() answering each explanation image with the stored map of its crop: coherency exactly 1."""
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, "deepliftshap")
    calls = []

    def attribute(images, targets):
        idx = torch.arange(len(calls) * 4, len(calls) * 4 + len(images))  # batch_size 4: which maps these are
        calls.append(len(images))
        return {l: raw[l][ci[idx]] for l in LAYERS}

    coh = coherency_scores(x, t, maps01, attribute, map_layers=layers, crop_index=ci, batch_size=4)
    assert calls == [4, 4, 4, 3]
    np.testing.assert_allclose(coh.numpy(), 1.0, atol=1e-12)


def test_a_constant_map_of_the_explanation_image_gives_coherency_and_adcc_zero(setup):
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, "deepliftshap")
    flat = lambda images, targets: {l: torch.zeros((len(images),) + raw[l].shape[1:]) for l in LAYERS}
    got = adcc_scores(model, x, t, maps01, flat, map_layers=layers, crop_index=ci)
    assert torch.equal(got["coherency"], torch.zeros(len(maps01), dtype=torch.float64))
    assert torch.equal(got["adcc"], torch.zeros(len(maps01), dtype=torch.float64))


def test_harmonic_mean_edge_cases():
    coh = torch.tensor([0.8, 0.0, 0.8, 0.8, float("nan")])
    com = torch.tensor([0.3, 0.3, 1.0, 0.3, 0.3])
    ad = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.1])
    out = adcc_combine(coh, com, ad)
    assert out[0].item() == pytest.approx(3 / (1 / 0.8 + 1 / 0.7 + 1 / 0.9))
    assert out[1:4].tolist() == [0.0, 0.0, 0.0]
    assert torch.isnan(out[4])


def test_mismatched_inputs_give_one_sentence(setup):
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, "deepliftshap")
    attribute = engine_attribute(model, "gradcam", b)
    with pytest.raises(LayersweepError, match=r"map_layers must give one layer per map \(15\)"):
        coherency_scores(x, t, maps01, attribute, map_layers=layers[:3], crop_index=ci)
    with pytest.raises(LayersweepError, match="do not match the crops' size"):
        coherency_scores(x, t, maps01[:, :5], attribute, map_layers=layers, crop_index=ci)


# ---------------------------------------------------------------------------------------------------------------
# the registered metric (metrics/adcc.py) through score_metric_shard, plain and rescaled
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [None, 0.3])
def test_registered_adcc_equals_the_naive_loop(r):
    from layersweep.metrics.metric_shard import score_metric_shard
    from layersweep.metrics.rescale import rescale_maps
    from test_metrics_sensitivity import shard_setup

    model, crops, x, t, b, shard, attribute = shard_setup("deepliftshap")
    df = score_metric_shard("adcc", model, crops, shard, options={"attribution_batch": 4}, r=r, rtol=1e-6,
                            batch_size=5, device="cpu", attribute=attribute, progress=False)
    raw = {l: torch.from_numpy(shard[f"map_{l}"]) for l in LAYERS}
    setup32 = (model, x, b, t)
    for row in df.itertuples():
        c = ["p", "q", "r"].index(row.crop_id)
        if row.layer == 4 and c == 1:
            assert row.constant and np.isnan(row.coherency) and np.isnan(row.complexity) and np.isnan(row.adcc)
            continue
        S = normalize_maps(raw[row.layer][c:c + 1], x.shape[-2:])[0]
        if r is not None:
            S = rescale_maps(S, r, 1e-6)[0]
        coh, com, ad, adcc = naive(setup32, "deepliftshap", raw, S[0], c, row.layer)
        assert row.coherency == pytest.approx(coh, abs=1e-5)
        assert row.complexity == pytest.approx(com, abs=1e-6)
        assert row.adcc == pytest.approx(adcc, abs=1e-5)
    if r is not None:
        np.testing.assert_allclose(df["complexity"].dropna(), r, rtol=1e-5)  # the rescaled maps' mean is r


def test_an_attribute_that_takes_layers_is_asked_only_for_the_layers_of_its_batch(setup):
    model, x, b, t = setup
    raw, maps01, ci, layers = maps_of(setup, "gradcampp")
    asked = []

    def attribute(images, targets, layers=LAYERS):  # as pipeline.method_on_inputs: a subset of the shard's layers
        asked.append(list(layers))
        return attribute_layers(model, images, targets, ["gradcampp"], layers)["gradcampp"]

    full = adcc_scores(model, x, t, maps01, engine_attribute(model, "gradcampp", b), map_layers=layers,
                       crop_index=ci, batch_size=4)
    part = adcc_scores(model, x, t, maps01, attribute, map_layers=layers, crop_index=ci, batch_size=4)
    torch.testing.assert_close(part["coherency"], full["coherency"], rtol=0, atol=1e-6)
    assert len(asked) == -(-len(maps01) // 4) and all(len(a) < len(LAYERS) for a in asked)
