"""attribution.precision / metrics.precision: float32 untouched, bf16 on the CPU, ties, config errors."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr
from torch import nn

from layersweep.attribution import attribute_layers
from layersweep.config import check_config
from layersweep.errors import LayersweepError
from layersweep.metrics import score_rescaled_shard, score_shard
from layersweep.metrics import (crop_scores, deletion_insertion, explanation_scores, normalize_maps,
                                pixel_ranks)
from layersweep.precision import precision_model
from layersweep.preprocess import to_model_input

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class SmallVGG(nn.Module):
    """VGG-shaped, random non-zero biases, 20 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 20))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def small_model():
    torch.manual_seed(0)
    m = SmallVGG()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.uniform_(-0.2, 0.2)
        m.classifier[-1].weight.mul_(6.0)
    return m.eval()


H, W = 24, 20  # non-square
LAYERS = [0, 2, 3, 5]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(4, H, W, 3), dtype=np.uint8)
    base = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    targets = np.array([3, 11, 0, 19])
    return crops, base, targets


def _shard(model, crops, base, targets, precision):
    x, b = to_model_input(crops), to_model_input(base)
    maps = attribute_layers(model, x, torch.as_tensor(targets), ["gradcampp", "deepliftshap"], LAYERS,
                            baselines=b, precision=precision)
    arrays = {"method": np.array("deepliftshap"), "crop_id": np.array([f"c{i}" for i in range(len(crops))]),
              "target": targets.astype(np.int64), "layers": np.array(LAYERS)}
    arrays.update({f"map_{l}": maps["deepliftshap"][l].numpy() for l in LAYERS})
    return maps, arrays


KW = dict(curve_points=6, blur_kernel=5, blur_sigma=2.0, batch_size=9, device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------ config
def _config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("section", ["attribution", "metrics"])
def test_precision_keys_are_validated_with_one_sentence(section):
    cfg = _config()
    check_config(cfg, ROOT / "config.schema.yaml")  # the shipped defaults pass
    cfg[section]["precision"] = "half"
    with pytest.raises(LayersweepError, match=rf"'{section}\.precision'.*float32.*bf16.*float16") as err:
        check_config(cfg, ROOT / "config.schema.yaml")
    assert str(err.value).count(". ") == 0  # one sentence


def test_the_removed_bf16_autocast_key_names_its_replacement():
    cfg = _config()
    cfg["attribution"]["bf16_autocast"] = True
    with pytest.raises(LayersweepError, match=r"'attribution\.bf16_autocast' was removed.*'attribution\.precision: bf16'"):
        check_config(cfg, ROOT / "config.schema.yaml")


def test_a_bad_precision_in_the_api_is_one_sentence(data):
    crops, base, targets = data
    model = small_model()
    with pytest.raises(LayersweepError, match=r"'attribution\.precision' is 'fp8'"):
        attribute_layers(model, to_model_input(crops), torch.as_tensor(targets), ["gradcampp"], [0], precision="fp8")
    _, arrays = _shard(model, crops, base, targets, "float32")
    with pytest.raises(LayersweepError, match=r"'metrics\.precision' is 'half'"):
        score_shard(model, crops, arrays, precision="half", **KW)


# ------------------------------------------------------------------------------------------------ float32
def test_float32_scoring_is_bit_identical_to_the_plain_model_also_after_a_bf16_run(data):
    """float32 takes no wrapper, no autocast, no channels_last: the numbers of the scoring functions called
    on the bare model, before and after a bf16 run (which must hand the model back in its own layout)."""
    crops, base, targets = data
    model = small_model()
    _, arrays = _shard(model, crops, base, targets, "float32")
    x, t = to_model_input(crops), torch.as_tensor(targets)
    maps01, const = normalize_maps(torch.from_numpy(arrays["map_0"]), (H, W))
    assert not const.any()
    with torch.no_grad():
        bare = crop_scores(model, x, t, blur_kernel=5, blur_sigma=2.0, batch_size=9)
        O = explanation_scores(model, x, maps01, t, batch_size=9)
        di = deletion_insertion(model, x, maps01, t, curve_points=6, batch_size=9, base=bare)

    def check(table):
        rows = table[table.layer == 0]
        assert np.array_equal(rows.score.to_numpy(), bare["original"].numpy().astype(float))
        assert np.array_equal(rows.explanation_score.to_numpy(), O.numpy().astype(float))
        assert np.array_equal(rows.deletion_auc.to_numpy(), di["deletion_auc"].numpy())
        assert np.array_equal(rows.insertion_auc.to_numpy(), di["insertion_auc"].numpy())

    check(score_shard(model, crops, arrays, **KW))
    reduced = score_shard(model, crops, arrays, precision="bf16", **KW)
    assert not np.array_equal(reduced.insertion_auc.to_numpy(), score_shard(model, crops, arrays, **KW).insertion_auc.to_numpy())
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last undone
    check(score_shard(model, crops, arrays, **KW))
    r32 = score_rescaled_shard(model, crops, arrays, r=0.3, **{k: v for k, v in KW.items() if k not in ("curve_points", "blur_kernel", "blur_sigma")})
    assert np.array_equal(r32[r32.layer == 0].score.to_numpy(), bare["original"].numpy().astype(float))


def test_float32_attribution_is_unchanged_by_a_reduced_precision_call(data):
    crops, base, targets = data
    model = small_model()
    before, _ = _shard(model, crops, base, targets, "float32")
    bf16, _ = _shard(model, crops, base, targets, "bf16")
    after, _ = _shard(model, crops, base, targets, "float32")
    for m in before:
        for layer in LAYERS:
            assert torch.equal(before[m][layer], after[m][layer])
            assert bf16[m][layer].dtype == torch.float32
    # bf16 really ran (maps differ), and stays close: rank correlation of the maps with float32
    assert any(not torch.equal(before[m][l], bf16[m][l]) for m in before for l in LAYERS)
    for m in before:
        for layer in LAYERS:
            a, b = before[m][layer].flatten(1), bf16[m][layer].flatten(1)
            for i in range(len(a)):
                if a[i].std() > 0:
                    assert spearmanr(a[i], b[i]).statistic > 0.9, (m, layer, i)


def test_precision_model_is_the_model_itself_in_float32():
    model = small_model()
    with precision_model(model, "cpu", "float32") as net:
        assert net is model
    with precision_model(model, "cpu", "bf16") as net:
        assert net is not model
        y = net(torch.randn(2, 3, H, W))
        assert y.dtype == torch.float32
        assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.features[0].weight.is_contiguous()


def test_float16_on_the_cpu_runs_and_warns_that_it_is_not_faster():
    model = small_model()
    x = torch.randn(2, 3, H, W)
    with pytest.warns(UserWarning, match="float16 on the CPU"):
        with precision_model(model, "cpu", "float16") as net:
            y = net(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert not torch.equal(y, model(x))


# ------------------------------------------------------------------------------ CPUs without native bf16
def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    assert re.search(r"[.!?]\s+[A-Z]", message) is None, message  # no second sentence


def _fake_cpu(monkeypatch, capability, native):
    from layersweep import precision

    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (capability, native))


def test_bf16_on_a_cpu_without_native_bf16_warns_once_and_still_runs_bf16(monkeypatch, data):
    """Issue 21: 3.4x slower than float32 on an AVX2 CPU. The warning names the CPU capability and the cost,
    and the arithmetic stays what the config asked for."""
    _fake_cpu(monkeypatch, "AVX2", False)
    model, x = small_model(), torch.randn(2, 3, H, W)
    with pytest.warns(UserWarning) as seen:
        with precision_model(model, "cpu", "bf16") as net:
            y = net(x)
    [warning] = [w for w in seen if "bf16" in str(w.message)]
    message = str(warning.message)
    _one_sentence(message)
    assert message.startswith("metrics.precision: bf16 on this CPU (AVX2, without AVX-512 BF16 or AMX)"), message
    assert "3.4x" in message and "slower than float32" in message
    assert net.dtype is torch.bfloat16 and not torch.equal(y, model(x))  # not silently float32
    crops, base, targets = data
    with pytest.warns(UserWarning, match=r"^attribution\.precision: bf16 on this CPU \(AVX2"):
        attribute_layers(model, to_model_input(crops[:1]), torch.tensor(targets[:1]), ["gradcam"], [0],
                         precision="bf16")


def test_bf16_on_a_cpu_with_native_bf16_says_nothing(monkeypatch):
    import warnings

    _fake_cpu(monkeypatch, "AVX512", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with precision_model(small_model(), "cpu", "bf16") as net:
            net(torch.randn(1, 3, H, W))


@pytest.mark.parametrize("native,says", [(True, "bf16 is this CPU's fast reduced precision"),
                                         (False, "this CPU (AVX2) has no native bf16 either, so float32 is its "
                                                 "fastest precision")])
def test_the_float16_warning_names_bf16_only_where_it_is_native(monkeypatch, native, says):
    _fake_cpu(monkeypatch, "AVX512" if native else "AVX2", native)
    with pytest.warns(UserWarning) as seen:
        with precision_model(small_model(), "cpu", "float16"):
            pass
    [message] = [str(w.message) for w in seen if "float16" in str(w.message)]
    _one_sentence(message)
    assert message.endswith(says + "."), message


def test_native_bf16_is_read_from_the_cpu_flags():
    """The detector against /proc/cpuinfo's flags (an independent reading of the same CPU): native exactly
    when the CPU has AVX-512 BF16 or AMX-BF16, and the capability is torch's."""
    import os

    from layersweep.precision import cpu_bf16_support

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"):
        pytest.skip("no /proc/cpuinfo (not Linux), or oneDNN's ISA is capped by the environment")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    if not flags & {"avx2", "avx512f"}:
        pytest.skip("not an x86 CPU with AVX2 / AVX-512 flags")
    capability, native = cpu_bf16_support()
    assert capability == torch.backends.cpu.get_cpu_capability()
    assert native == bool(flags & {"avx512_bf16", "amx_bf16"})


# ------------------------------------------------------------------------------------------------ ties
def test_ranks_of_bf16_maps_come_from_float32_values_in_stable_pixel_order():
    """bf16 maps have many ties; the deletion order must be the float32 order of the bf16 values, ties broken
    by pixel index, identical on every call: checked against a naive sort by (-value, pixel index)."""
    g = torch.Generator().manual_seed(0)
    maps = (0.5 + 0.5 * torch.rand(5, 12, 13, generator=g)).to(torch.bfloat16)  # 128 levels in [0.5, 1): ties
    assert len(torch.unique(maps)) < maps.numel() / 2
    ranks = pixel_ranks(maps)
    assert torch.equal(ranks, pixel_ranks(maps)) and torch.equal(ranks, pixel_ranks(maps.float()))
    for m in range(len(maps)):
        vals = maps[m].float().flatten().tolist()
        order = sorted(range(len(vals)), key=lambda p: (-vals[p], p))
        naive = np.empty(len(vals), dtype=np.int64)
        naive[order] = np.arange(len(vals))
        assert np.array_equal(ranks[m].numpy(), naive)
    # normalisation widens to float32 before upsampling: the same maps01 as from the float32 copy
    a, _ = normalize_maps(maps, (14, 18))
    b, _ = normalize_maps(maps.float(), (14, 18))
    assert a.dtype == torch.float32 and torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ drift bounds
# docs/gpu-and-precision.md "Reduced precision: measured drift" documents these bounds for bf16 (measured maxima with margin).
BF16_BOUNDS = {"ad": 1.0, "deletion_auc": 1e-3, "insertion_auc": 1e-3}  # max |per-crop diff|
BF16_IC_FLIP_GAP = 0.05  # an IC indicator flips only where |O - Y| / Y is below this (a near-tie)
BF16_SPEARMAN = {"gradcampp": 0.9, "deepliftshap": 0.75}  # min rank correlation of a map with float32


def test_bf16_on_the_cpu_stays_within_the_documented_drift_bounds(data):
    crops, base, targets = data
    model = small_model()
    maps32, arrays = _shard(model, crops, base, targets, "float32")
    maps16, _ = _shard(model, crops, base, targets, "bf16")
    for m, bound in BF16_SPEARMAN.items():
        for layer in LAYERS:
            a, b = maps32[m][layer].flatten(1), maps16[m][layer].flatten(1)
            for i in range(len(a)):
                if a[i].std() > 0:  # Spearman with average ranks: zeros of clamped maps are ties
                    assert spearmanr(a[i], b[i]).statistic >= bound, (m, layer, i)
    ref = score_shard(model, crops, arrays, **KW)
    red = score_shard(model, crops, arrays, precision="bf16", **KW)
    for metric, bound in BF16_BOUNDS.items():
        diff = np.abs(red[metric].to_numpy() - ref[metric].to_numpy())
        assert np.nanmax(diff) <= bound, metric
        assert np.nanmax(diff) > 0 or metric != "ad"  # bf16 really ran
    flips = red.ic.to_numpy() != ref.ic.to_numpy()
    gap = np.abs(ref.explanation_score - ref.score).to_numpy() / ref.score.to_numpy()
    assert np.all(gap[flips] <= BF16_IC_FLIP_GAP)
