"""Smoke test of the device path: the engine, one metric shard and the model move on CUDA give the CPU's numbers.

Skipped where there is no CUDA (every test here runs on the CPU otherwise), so that the first GPU run checks
moving the model and the inputs to the device and the bf16 autocast path, which no CPU test reaches.
"""
import numpy as np
import pytest
import torch
from torch import nn

from layersweep.attribution import attribute_crops
from layersweep.metrics import score_rescaled_shard, score_shard
from layersweep.model import build_vgg11, load_model, save_checkpoint, trainable_part
from layersweep.preprocess import to_model_input

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

METHODS = ["deepliftshap", "gradcampp"]
LAYERS = [-1, 0, 2, 4, 5]


class TinyVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(32, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 20))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def tiny_model():
    torch.manual_seed(0)
    return TinyVGG().eval()


@pytest.fixture
def full_float32_on_cuda():
    """TF32 convolutions and matmuls (on by default for cuDNN) would blur a float32 comparison."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _inputs(n=5, size=(24, 32)):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    base = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    return crops, np.array([1, 0, 19, 7, 3]), base


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_engine_on_cuda_matches_the_cpu(full_float32_on_cuda):
    crops, targets, base = _inputs()
    kw = dict(batch_size=2, max_pairs=3, progress=False)
    cpu = attribute_crops(tiny_model(), crops, targets, base, METHODS, LAYERS, device="cpu", **kw)
    model = tiny_model()
    gpu = attribute_crops(model, crops, targets, base, METHODS, LAYERS, device="cuda", **kw)
    assert next(model.parameters()).device.type == "cuda"  # the stage helper moved the model
    np.testing.assert_allclose(gpu["prob"], cpu["prob"], rtol=1e-4, atol=1e-6)
    for m in METHODS:
        for layer in LAYERS:
            assert gpu["maps"][m][layer].dtype == np.float32
            assert _rel(gpu["maps"][m][layer], cpu["maps"][m][layer]) < 1e-4, (m, layer)
    bf16 = attribute_crops(tiny_model(), crops, targets, base, METHODS, LAYERS, device="cuda", precision="bf16", **kw)
    for m in METHODS:
        for layer in LAYERS:
            got = bf16["maps"][m][layer]
            assert got.dtype == np.float32 and np.isfinite(got).all()
            assert _rel(got, cpu["maps"][m][layer]) < 0.1, (m, layer)  # bf16 keeps 8 bits of mantissa


def test_metric_shard_on_cuda_matches_the_cpu(full_float32_on_cuda):
    crops, targets, base = _inputs()
    maps = attribute_crops(tiny_model(), crops, targets, base, ["gradcampp"], LAYERS, batch_size=5, max_pairs=4,
                           device="cpu", progress=False)
    shard = {"method": np.array("gradcampp"), "crop_id": np.array([f"c{i}" for i in range(5)]),
             "target": targets.astype(np.int64), "prob": maps["prob"], "layers": np.array(LAYERS, np.int64),
             **{f"map_{layer}": m for layer, m in maps["maps"]["gradcampp"].items()}}
    kw = dict(curve_points=6, blur_kernel=5, blur_sigma=2.0, batch_size=16, progress=False)
    cpu = score_shard(tiny_model(), crops, shard, device="cpu", **kw)
    gpu = score_shard(tiny_model(), crops, shard, device="cuda", **kw)
    assert cpu["constant"].tolist() == gpu["constant"].tolist() and (~cpu["constant"]).any()
    for col in ("score", "explanation_score", "deletion_auc", "insertion_auc"):
        np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-4, atol=1e-5, err_msg=col)
    cpu_r = score_rescaled_shard(tiny_model(), crops, shard, r=0.3, device="cpu", progress=False)
    gpu_r = score_rescaled_shard(tiny_model(), crops, shard, r=0.3, device="cuda", progress=False)
    np.testing.assert_allclose(gpu_r["explanation_score"], cpu_r["explanation_score"], rtol=1e-3, atol=1e-5)


def test_fitted_model_loads_onto_cuda(tmp_path, full_float32_on_cuda):
    model = build_vgg11("random", seed=1)
    head = trainable_part(model, "head")
    save_checkpoint(tmp_path / "head.pt", head, head.state_dict(), init="random", train="head", seed=1)
    gpu = load_model(tmp_path / "head.pt", device="cuda")
    assert {p.device.type for p in gpu.parameters()} == {"cuda"}
    x = to_model_input(_inputs(n=2, size=(32, 32))[0])
    with torch.no_grad():
        np.testing.assert_allclose(gpu(x.cuda()).cpu().numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
