"""model.source torchray_voc: TorchRay's VOC VGG16 (a Caffe conversion) loaded from a state dict written in
its own layout inside the test, against a network built by hand the Caffe way (BGR input, BGR mean on the
0-255 scale, ceil-mode pooling, fully connected layers numbered 0/2/4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from layersweep.errors import LayersweepError
from layersweep.model import _read_state, build_architecture, build_model, load_torchray_state
from layersweep.preprocess import CAFFE_BGR_MEAN, TORCHRAY_VOC, normalize, preprocessing_for, to_model_input

HIDDEN = 16  # the real model's 4096: same layout, a 1 MB file instead of 530 MB
CFG = cfgs["D"]  # vgg16


def torchray_layout_state(seed=0) -> dict:
    """What vgg16_voc-b050e8c3.pth.tar holds: features.{i} conv weights reading BGR, classifier.{0,2,4} with
    Caffe's fully connected weights (classifier.0 as (out, 512, 7, 7)), non-zero biases everywhere."""
    g = torch.Generator().manual_seed(seed)
    state, i, c_in = {}, 0, 3
    for v in CFG:
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = torch.randn(v, c_in, 3, 3, generator=g) * (2.0 / (9 * c_in)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(v, generator=g) * 0.1
        i, c_in = i + 2, v
    for key, shape in (("0", (HIDDEN, 512, 7, 7)), ("2", (HIDDEN, HIDDEN)), ("4", (20, HIDDEN))):
        state[f"classifier.{key}.weight"] = torch.randn(*shape, generator=g) / np.sqrt(np.prod(shape[1:]))
        state[f"classifier.{key}.bias"] = torch.randn(shape[0], generator=g) * 0.1
    return state


class Skeleton(nn.Module):
    """torchvision's VGG16 layout (floor-mode pools, as torchvision builds them) with Linear 25088-16-16-20."""

    def __init__(self):
        super().__init__()
        self.features = make_layers(CFG)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(25088, HIDDEN), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(HIDDEN, HIDDEN), nn.ReLU(True), nn.Dropout(), nn.Linear(HIDDEN, 20))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def caffe_reference(state: dict, crops_uint8: np.ndarray) -> torch.Tensor:
    """The logits computed by hand, the Caffe way, from the raw file tensors (no conversion at all)."""
    x = torch.as_tensor(crops_uint8).permute(0, 3, 1, 2).double()[:, [2, 1, 0]]  # RGB -> BGR, 0-255
    x = x - torch.tensor(CAFFE_BGR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    i = 0
    for v in CFG:
        if v == "M":
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            i += 1
        else:
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double(), padding=1))
            i += 2
    x = torch.flatten(F.adaptive_avg_pool2d(x, 7), 1)
    for key in ("0", "2", "4"):
        w = state[f"classifier.{key}.weight"].double()
        x = F.linear(x, w.reshape(w.shape[0], -1), state[f"classifier.{key}.bias"].double())
        if key != "4":
            x = F.relu(x)
    return x


def test_loader_converts_keys_bgr_and_ceil_mode(tmp_path):
    state = torchray_layout_state()
    path = tmp_path / "vgg16_voc-test.pth.tar"
    torch.save(state, path)
    model = load_torchray_state(Skeleton(), _read_state(path, "vgg16", "torchray_voc"), path).eval()
    sd = model.state_dict()
    # keys: TorchRay's 0/2/4 are torchvision's 0/3/6; classifier.0's (out, 512, 7, 7) is flattened
    torch.testing.assert_close(sd["classifier.3.weight"], state["classifier.2.weight"])
    torch.testing.assert_close(sd["classifier.6.bias"], state["classifier.4.bias"])
    torch.testing.assert_close(sd["classifier.0.weight"], state["classifier.0.weight"].reshape(HIDDEN, -1))
    # BGR -> RGB on the first conv only
    torch.testing.assert_close(sd["features.0.weight"], state["features.0.weight"].flip(1))
    torch.testing.assert_close(sd["features.2.weight"], state["features.2.weight"])
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(m.ceil_mode for m in pools)

    # logits: the loaded model on the torchray preprocessing equals the hand-built Caffe network;
    # 36 x 52 is odd after 2 and 4 pools, so floor-mode pooling would give other logits
    crops = np.random.default_rng(1).integers(0, 256, (3, 36, 52, 3), dtype=np.uint8)
    with torch.no_grad():
        x = normalize(torch.as_tensor(crops).permute(0, 3, 1, 2).double() / 255, TORCHRAY_VOC)  # float64 throughout
        ours = model.double()(x)
    ref = caffe_reference(state, crops)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    for m in pools:
        m.ceil_mode = False
    with torch.no_grad():
        floor = model(x)
    assert (floor - ref).abs().max() > 1e-3  # the check above would notice floor-mode pooling


def test_torchray_preprocessing_is_the_bgr_mean_on_the_255_scale():
    crop = np.array([[[0, 128, 255]]], dtype=np.uint8)[None]  # one RGB pixel
    x = to_model_input(crop, preprocessing=preprocessing_for("torchray_voc")).double()
    expected = torch.tensor([0 - 123.68, 128 - 116.779, 255 - 103.939], dtype=torch.float64)
    torch.testing.assert_close(x[0, :, 0, 0], expected, rtol=0, atol=1e-4)  # float32 on the 0-255 scale
    # the torchvision path is untouched: ImageNet mean and std on [0, 1]
    y = to_model_input(crop)[0, :, 0, 0].double()
    ref = (torch.tensor([0, 128, 255]) / 255.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(y, ref.double(), rtol=0, atol=1e-6)
    with pytest.raises(LayersweepError, match="'model.source' has the unknown value 'caffe'"):
        preprocessing_for("caffe")


def test_torchray_random_init_and_bad_files(tmp_path):
    with torch.device("meta"):  # structure only: no 138M-parameter init
        model = build_architecture("vgg16", "torchray_voc", n_classes=20)
    assert model.classifier[-1].out_features == 20 and all(
        m.ceil_mode for m in model.features if isinstance(m, nn.MaxPool2d))
    torchvision_layout = tmp_path / "vgg16-like.pth"
    state = torchray_layout_state()
    state["classifier.6.weight"] = state.pop("classifier.4.weight")
    torch.save(state, torchvision_layout)
    with pytest.raises(LayersweepError, match=r"vgg16-like\.pth' has the key 'classifier\.6\.weight'"):
        build_model("imagenet", torchvision_layout, arch="vgg16", source="torchray_voc")
    with pytest.raises(LayersweepError, match=r"'model\.arch' is 'vgg11' but 'model\.source: torchray_voc'"):
        build_model("imagenet", torchvision_layout, arch="vgg11", source="torchray_voc")
