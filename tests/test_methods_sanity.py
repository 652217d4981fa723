"""Sanity maps (methods/sanity.py): allones, half and uniformnoise, at the input size, the same at every layer,
and the noise seeded per crop (not by the batch); and the cost model's view of them and of refinecam."""
import torch
from torch import nn

from layersweep.attribution import attribute_layers, get_method
from layersweep.metrics import normalize_maps


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Linear(4, 3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_sanity_maps_are_what_they_say():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(3, 3, 10, 14)
    t = torch.tensor([0, 1, 2])
    out = attribute_layers(model, x, t, ["allones", "half", "uniformnoise"], [0, 2], crop_ids=["a", "b", "c"])
    for layer in (0, 2):
        ones, half, noise = out["allones"][layer], out["half"][layer], out["uniformnoise"][layer]
        assert ones.shape == half.shape == noise.shape == (3, 10, 14)
        assert float(ones.sum()) == 3 * (10 * 14 - 1) and (ones[:, 0, 0] == 0).all()
        assert sorted(half[0].unique().tolist()) == [0.0, 0.5, 1.0] and int((half[0] == 0.5).sum()) == 10 * 14 - 2
        assert float(noise.min()) >= 0 and float(noise.max()) < 1
        assert 0.4 < float(noise.mean()) < 0.6 and float((noise[0] - noise[1]).abs().max()) > 0.5
        # normalised by the pipeline, they stay what they are (one pixel at 0 keeps the map from being constant)
        s, const = normalize_maps(ones, (10, 14))
        assert not const.any() and torch.equal(s, ones)
    assert torch.equal(out["uniformnoise"][0], out["uniformnoise"][2])  # one noise map per crop, every layer
    # a crop's noise depends on its id, not on the batch or the other crops
    alone = attribute_layers(model, x[1:2], t[1:2], ["uniformnoise"], [2], crop_ids=["b"])["uniformnoise"][2]
    assert torch.equal(alone[0], out["uniformnoise"][2][1])
    other_seed = attribute_layers(model, x[1:2], t[1:2], ["uniformnoise"], [2], crop_ids=["b"], seed=1)
    assert not torch.equal(other_seed["uniformnoise"][2][0], alone[0])


def test_the_cost_model_prices_them():
    from layersweep.attribution import work

    for name in ("allones", "half", "uniformnoise"):
        assert work.method_layer_cost(get_method(name)) is work.no_layer_cost
    refine = get_method("refinecam")
    fn = work.method_layer_cost(refine)

    class Facts:
        channels = 64

    assert fn(Facts(), {"base": "gradcampp", "mixer": "product"}) == work.ZERO
    assert fn(Facts(), {"base": "scorecam", "mixer": "product"}) == work.Work(forwards=64.0)
