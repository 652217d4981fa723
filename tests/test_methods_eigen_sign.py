"""The sign of EigenCAM, EigenGradCAM and SegEigenCAM against pytorch-grad-cam 1.5.7, at every layer of VGG11,
in float32 and float64 (issue 21, item 1).

The first principal component's sign is LAPACK's arbitrary choice, and after the CAM's ReLU it decides the whole
map. On some maps a few-ulp change of the centred matrix flips it (all seen here were 35-position maps of
layers 8-19, the 5x7 maps of a 40x56 input, which LAPACK's divide-and-conquer SVD handles), so the engine must
centre and decompose exactly as the library does. A sign flip makes the map's relative error about 1; the
tolerance is far below that and far above float32 rounding.

Each image set is checked in two parts, because the library's `np.linalg.svd(..., full_matrices=True)` builds
the full (H*W)^2 U: about 0.5 s a map for the 2240 x 64 matrices of layers 0-1 at 40x56, 0.05 s at 32x40.
- layers 2-20 at 40x56, the size at which the sign-sensitive maps appear;
- layers 0-1 at 32x40, on two images.
Image sets: the real VOC photos (the shared fixture; skipped when absent), and a fixed random set that needs no
fixture: flat-coloured rectangles on a flat background (photo-like flat regions give the sign-sensitive deep
maps), and Gaussian noise for layers 0-1 (where the pre-fix float32 cast flipped float64 EigenCAM maps).
Before the fix of issue 21 (centring a C-ordered copy, in float32 whatever the input), on the machine it was
written on (numpy 2.4 with OpenBLAS 0.3.31, AVX-512) these sets had 2 (photos, float32), 4 (photos, float64),
5 (random, float32) and 4 (random, float64) sign mismatches; which maps are sensitive depends on the
LAPACK build, so another machine may find others or none.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from layersweep.attribution import attribute_layers
from layersweep.preprocess import to_model_input

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voc2007-sample"
PHOTOS = FIXTURE / "VOCdevkit" / "VOC2007" / "JPEGImages"
CAMS = {"eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM", "segeigencam": "SegEigenCAM"}
LATE, EARLY = list(range(2, 21)), [0, 1]
TOL = 1e-4  # max|engine - library| / max|library| per map; a flipped sign gives ~1

pytestmark = pytest.mark.usefixtures("one_thread", "one_blas_thread")  # one_thread: tests/conftest.py


@pytest.fixture(scope="module")
def one_blas_thread():
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture
def raw_cams(monkeypatch):
    """The library's raw cams: after np.maximum(cam, 0), before min-max and resize."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


@pytest.fixture(scope="module")
def vgg11():
    """Unmodified VGG11 features (random weights), every conv and linear bias redrawn from N(0, 0.1), and a
    small 25088-64-64-20 head (the gradients only need some head)."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 20))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    return model.eval()


def _photos(n: int, height: int, width: int) -> torch.Tensor:
    paths = sorted(PHOTOS.glob("*.jpg"))[:n]
    crops = np.stack([np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.BILINEAR)) for p in paths])
    return to_model_input(crops)


def _blocks(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Three flat-coloured rectangles on a flat background per image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 1, 1, generator=g).expand(n, 3, height, width).clone()
    for i in range(n):
        for _ in range(3):
            r0 = int(torch.randint(0, height - 4, (1,), generator=g))
            c0 = int(torch.randint(0, width - 4, (1,), generator=g))
            r1 = r0 + int(torch.randint(4, height // 2 + 1, (1,), generator=g))
            c1 = c0 + int(torch.randint(4, width // 2 + 1, (1,), generator=g))
            x[i, :, r0:r1, c0:c1] = torch.randn(3, 1, 1, generator=g)
    return x


def _noise(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def image_set(name: str):
    """(images at 40x56 for layers 2-20, images at 32x40 for layers 0-1)."""
    if name == "voc-photos":
        if not PHOTOS.is_dir():
            pytest.skip(f"the real VOC 2007 sample {FIXTURE} is absent (it lives in ../shared, not in a plain clone)")
        return _photos(6, 40, 56), _photos(2, 32, 40)
    return _blocks(4, 40, 56, seed=1), _noise(2, 32, 40, seed=0)


def _no_inplace(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return ref


def _library_maps(cls_name, ref, x, targets, layers) -> dict:
    """{layer: (B, H, W)} raw cams of the library, all layers from one forward and backward."""
    with getattr(pgc, cls_name)(model=ref, target_layers=[ref.features[l] for l in layers]) as cam:
        cam.aggregate_multi_layers = lambda per_layer: per_layer  # the per-layer cams, not their mean
        per_layer = cam(x, [ClassifierOutputTarget(int(c)) for c in targets])
    return {l: torch.from_numpy(m[:, 0]) for l, m in zip(layers, per_layer)}


def mismatches(model, x, layers) -> tuple[list, int]:
    """The (method, layer, image, relative error) of every map the engine and the library disagree on."""
    targets = torch.tensor([2, 12, 17] * 4)[:len(x)]
    ours = attribute_layers(model, x, targets, methods=list(CAMS), layers=layers)
    ref = _no_inplace(model)
    bad, compared = [], 0
    for method, cls_name in CAMS.items():
        theirs = _library_maps(cls_name, ref, x, targets, layers)
        for layer in layers:
            for i in range(len(x)):
                a, b = ours[method][layer][i].double(), theirs[layer][i].double()
                scale = b.abs().max()
                if scale == 0:  # a centred 1x1 map (layer 20) is exactly 0 in both
                    if a.abs().max() != 0:
                        bad.append((method, layer, i, "library 0, engine not"))
                    continue
                compared += 1
                err = float((a - b).abs().max() / scale)
                if err > TOL:
                    bad.append((method, layer, i, round(err, 3)))
    return bad, compared


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("images", ["voc-photos", "random"])
def test_eigen_cams_have_the_library_sign_at_every_layer(vgg11, raw_cams, images, dtype):
    late, early = image_set(images)
    model = copy.deepcopy(vgg11).to(dtype)
    bad_late, n_late = mismatches(model, late.to(dtype), LATE)
    bad_early, n_early = mismatches(model, early.to(dtype), EARLY)
    assert n_late >= 3 * len(late) * 18 and n_early == 3 * len(early) * 2  # only layer 20's 1x1 maps are 0
    assert not bad_late + bad_early, f"{len(bad_late + bad_early)} maps differ: {bad_late + bad_early}"


def test_the_projection_keeps_the_input_and_its_dtype():
    """float64 stays float64 (no float32 detour), NaNs count as 0 as in the library, and the input tensor
    is not modified (the NaN replacement works on a copy)."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from layersweep.attribution.methods._cam import first_component_projection

    x = torch.randn(2, 8, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[0, 1, 2, 3] = float("nan")
    before = x.clone()
    got = first_component_projection(x)
    assert got.dtype == torch.float64
    assert torch.equal(x.isnan(), before.isnan()) and torch.equal(x.nan_to_num(), before.nan_to_num())
    expected = get_2d_projection(x.numpy())  # the library returns float32 of its float64 arithmetic
    assert np.array_equal(got.numpy().astype(np.float32), expected)
