"""Max-sensitivity of the layer maps against captum's `sensitivity_max` with the same seeded perturbations:
around captum's own LayerDeepLiftShap / LayerGradCam called per layer, and around the engine per layer; plus a
closed form and the per-crop seeding."""
import warnings

import numpy as np

import captum.attr as captum_attr  # pinned dependencies: a broken install must fail, not skip
import pytest
import torch
from captum.metrics import sensitivity_max
from torch import nn

from layersweep.attribution import attribute_layers
from layersweep.errors import LayersweepError
from layersweep.metrics.sensitivity import sensitivity_max_layers, uniform_perturbations

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

K = 3           # perturbations per crop
RADIUS = 0.05
LAYERS = [0, 1, 2, 3, 4]


class TinyVGG(nn.Module):
    def __init__(self, n_classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(6 * 4, 8), nn.ReLU(inplace=True), nn.Linear(8, n_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _no_inplace(model):
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyVGG()
    with torch.no_grad():  # random non-zero biases: a bias-handling bug shows
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.2 * torch.randn(m.bias.shape))
    model = _no_inplace(model).double().eval()
    x = torch.randn(3, 3, 12, 16, dtype=torch.float64)  # non-square
    baselines = torch.randn(2, 3, 12, 16, dtype=torch.float64)  # 2 != 3 crops: captum must not expand them
    targets = torch.tensor([1, 4, 0])
    return model, x, baselines, targets


def generators(seed=0, n=3):
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(n)]


def noise_of(x, seed=0):
    """The perturbations `sensitivity_max_layers` draws, in captum's crop-major order."""
    return torch.cat([uniform_perturbations(x[c], K, RADIUS, g) for c, g in enumerate(generators(seed, len(x)))])


def captum_reference(explain, x, targets, noise, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks
        return sensitivity_max(explain, x, perturb_func=lambda inputs: inputs + noise, n_perturb_samples=K,
                               target=targets, **kwargs)


def engine_attribute(model, method, baselines):
    def attribute(images, targets):
        return attribute_layers(model, images, targets, [method], LAYERS, baselines=baselines)[method]
    return attribute


def _first(inputs):
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _like(inputs, out):
    """captum's sensitivity_max iterates over the explanation of its (tuple) input as over a tuple: a layer
    method returns a bare tensor, so give it back as a 1-tuple there."""
    return (out,) if isinstance(inputs, tuple) else out


@pytest.mark.parametrize("batch_size", [1, 7])  # 7: two crops' perturbed images share a call
def test_deepliftshap_equals_captum_sensitivity_max_around_layer_deepliftshap(setup, batch_size):
    model, x, b, t = setup
    ours = sensitivity_max_layers(x, t, engine_attribute(model, "deepliftshap", b), generators=generators(),
                                  n_perturb_samples=K, radius=RADIUS, batch_size=batch_size)
    noise = noise_of(x)
    for layer in LAYERS:
        dls = captum_attr.LayerDeepLiftShap(model, model.features[layer])

        def explain(inputs, baselines, target):
            return _like(inputs, dls.attribute(inputs, baselines, target=target).sum(1))

        ref = captum_reference(explain, x, t, noise, baselines=b)
        assert ref.min() > 1e-3  # the perturbation moves the maps: the comparison checks something
        torch.testing.assert_close(ours[layer], ref.double(), rtol=0, atol=1e-4)


def test_gradcam_equals_captum_sensitivity_max_around_layer_gradcam(setup):
    model, x, _, t = setup
    ours = sensitivity_max_layers(x, t, engine_attribute(model, "gradcam", None), generators=generators(1),
                                  n_perturb_samples=K, radius=RADIUS, batch_size=4)
    noise = noise_of(x, seed=1)
    for layer in LAYERS:
        gc = captum_attr.LayerGradCam(model, model.features[layer])

        def explain(inputs, target):
            return _like(inputs, gc.attribute(inputs, target=target, relu_attributions=True).sum(1))

        ref = captum_reference(explain, x, t, noise)
        torch.testing.assert_close(ours[layer], ref.double(), rtol=0, atol=1e-4)


def test_batched_layers_equal_captum_around_the_engine_called_per_layer(setup):
    """The batching, the max over samples and the layer bookkeeping, with the explanation held fixed."""
    model, x, b, t = setup
    ours = sensitivity_max_layers(x, t, engine_attribute(model, "gradcampp", b), generators=generators(2),
                                  n_perturb_samples=K, radius=RADIUS, batch_size=5)
    noise = noise_of(x, seed=2)
    for layer in LAYERS:
        def explain(inputs, target):
            return _like(inputs, attribute_layers(model, _first(inputs), target, ["gradcampp"], [layer])["gradcampp"][layer])

        ref = captum_reference(explain, x, t, noise)
        torch.testing.assert_close(ours[layer], ref.double(), rtol=0, atol=1e-10)


def test_closed_form_of_a_linear_explanation_and_a_zero_map():
    """E(z) = the first channel: sensitivity = max_k ||delta_k[0]|| / ||x[0]||; E = 0 divides by 1 (captum)."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)

    def attribute(images, targets):
        return {0: images[:, 0], 1: images[:, 0] * 0}

    out = sensitivity_max_layers(x, [0, 0], attribute, generators=generators(3, 2), n_perturb_samples=4,
                                 radius=0.1, batch_size=3)
    for c, g in enumerate(generators(3, 2)):
        d = uniform_perturbations(x[c], 4, 0.1, g)[:, 0]
        assert d.abs().max() <= 0.1
        expected = max(float(d[k].norm()) for k in range(4)) / float(x[c, 0].norm())
        assert out[0][c].item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(out[1], torch.zeros(2, dtype=torch.float64))


def test_a_crop_gets_the_same_value_whatever_its_shard_mates(setup):
    model, x, b, t = setup
    attribute = engine_attribute(model, "gradcam", None)
    full = sensitivity_max_layers(x, t, attribute, generators=generators(4), n_perturb_samples=K, radius=RADIUS)
    g = generators(4)
    alone = sensitivity_max_layers(x[2:], t[2:], attribute, generators=[g[2]], n_perturb_samples=K, radius=RADIUS)
    for layer in LAYERS:
        torch.testing.assert_close(alone[layer][0], full[layer][2], rtol=1e-12, atol=0)


def test_bad_options_give_one_sentence(setup):
    model, x, _, t = setup
    attribute = engine_attribute(model, "gradcam", None)
    with pytest.raises(LayersweepError, match=r"'metrics.options.sensitivity.n_perturb_samples' is 0; it must be an integer >= 1\."):
        sensitivity_max_layers(x, t, attribute, generators=generators(), n_perturb_samples=0)
    with pytest.raises(LayersweepError, match=r"'metrics.options.sensitivity.radius' is -0.1; it must be a number > 0\."):
        sensitivity_max_layers(x, t, attribute, generators=generators(), radius=-0.1)


# ---------------------------------------------------------------------------------------------------------------
# the registered metric (metrics/sensitivity.py) through score_metric_shard
# ---------------------------------------------------------------------------------------------------------------
def shard_setup(method="gradcampp", seed=0):
    """A float32 tiny VGG, uint8 crops, and the shard of its maps as the attribution stage writes it (one map
    made constant), with the attribute function the metric rule builds."""
    import numpy as np

    from layersweep.preprocess import to_model_input

    torch.manual_seed(seed)
    model = TinyVGG()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.2 * torch.randn(m.bias.shape))
    model.eval()
    crops = np.random.default_rng(seed).integers(0, 256, size=(3, 12, 16, 3), dtype=np.uint8)
    x = to_model_input(crops)
    b = to_model_input(np.random.default_rng(seed + 1).integers(0, 256, size=(2, 12, 16, 3), dtype=np.uint8))
    t = torch.tensor([1, 4, 0])

    def attribute(images, targets, crop_ids=None):
        return attribute_layers(model, images, targets, [method], LAYERS, baselines=b, crop_ids=crop_ids)[method]

    maps = attribute(x, t)
    shard = {"method": np.array(method), "crop_id": np.array(["p", "q", "r"]), "target": t.numpy(),
             "prob": np.full(3, np.nan, dtype=np.float32), "layers": np.array(LAYERS)}
    shard.update({f"map_{l}": maps[l].numpy() for l in LAYERS})
    shard["map_4"][1] = 0.5  # a constant map: NaN row
    return model, crops, x, t, b, shard, attribute


def context_generators(crop_ids, seed, name, stream):
    """The per-crop generators score_metric_shard's context hands out (`MetricContext.crop_generator`)."""
    from types import SimpleNamespace

    from layersweep.metrics.metric_shard import MetricContext

    ctx = SimpleNamespace(seed=seed, crop_ids=crop_ids, name=name, device=torch.device("cpu"))
    return [MetricContext.crop_generator(ctx, i, stream) for i in range(len(crop_ids))]


def test_registered_sensitivity_equals_captum_on_every_row():
    from layersweep.metrics.metric_shard import score_metric_shard

    model, crops, x, t, b, shard, attribute = shard_setup("gradcampp")
    df = score_metric_shard("sensitivity", model, crops, shard, options={"n_perturb_samples": 4, "radius": 0.1,
                            "attribution_batch": 5}, seed=7, device="cpu", attribute=attribute, progress=False)
    assert list(df["layer"]) == [l for l in LAYERS for _ in range(3)]
    gens = context_generators(["p", "q", "r"], 7, "sensitivity", "perturbation")
    noise = torch.cat([uniform_perturbations(x[c], 4, 0.1, g) for c, g in enumerate(gens)])
    for layer in LAYERS:
        def explain(inputs, target):
            return _like(inputs, attribute_layers(model, _first(inputs), target, ["gradcampp"], [layer])["gradcampp"][layer])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = sensitivity_max(explain, x, perturb_func=lambda inputs: inputs + noise, n_perturb_samples=4,
                                  target=t).double().numpy()
        got = df.loc[df["layer"] == layer, "sensitivity"].to_numpy()
        if layer == 4:
            assert np.isnan(got[1]) and bool(df.loc[df["layer"] == 4, "constant"].iloc[1])
            got, ref = got[[0, 2]], ref[[0, 2]]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
        assert (got > 0).all()
