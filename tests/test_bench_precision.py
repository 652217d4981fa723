"""`make bench`'s precision benchmark runs on the CPU at a tiny size (the CUDA path's code stays alive)."""
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_precision  # noqa: E402

from layersweep.precision import cpu_bf16_support  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_bench_precision_prints_rates_attribution_and_projections(capsys, tmp_path):
    cfg = (Path(__file__).resolve().parents[1] / "config.yaml").read_text()
    cfg = cfg.replace("layers: all ", "layers: [2, 20] ")
    (tmp_path / "study.yaml").write_text(cfg)
    bench_precision.main(["--device", "cpu", "--size", "32", "--batches", "1,2", "--precisions", "float32,bf16",
                          "--quick", "--config", str(tmp_path / "study.yaml")])
    out = capsys.readouterr().out
    capability, native = cpu_bf16_support()
    assert f"# CPU: capability {capability}, native bf16 (AVX-512 BF16 or AMX): {'yes' if native else 'no'}\n" in out
    assert re.search(r"float32 .*best: batch [12], [\d.]+ img/s", out)
    assert re.search(r"bf16 .*best: batch [12], [\d.]+ img/s", out)
    assert re.search(r"32 px: float32 [\d.]+ s \(1\.00x\), bf16 [\d.]+ s \([\d.]+x\)", out)
    for method in ("deepliftshap", "gradcampp"):
        assert re.search(rf"{method} +float32: [\d.]+ s  bf16: [\d.]+ s", out)
    assert re.search(r"study\.yaml: 1024 crops, 2 methods, 2 layers: float32 [\d.]+ (h|min)", out)
    # the papers' set-ups (config/studies/, each config.yaml with its own keys on top, at its own arch's layers)
    assert re.search(r"liftcam-voc\.yaml: 1000 crops, 6 methods, 1 layers: float32 [\d.]+ (h|min)", out)
    assert re.search(r"liftcam-voc-pi10000\.yaml: 500 crops, 1 methods, 1 layers: float32 [\d.]+ (h|min)", out)


def test_scoring_forwards_are_counted_from_the_config():
    cfg = {"data": {"n_images": 10}, "metrics": {"curve_points": 5}, "rescale": {"r": [0.3, 0.5]}}
    n, fw = bench_precision.scoring_forwards(cfg, 3)
    # plain: Y and blurred per crop + 1 zero image + per map (1 explanation + 2 x 3 interior points);
    # rescaled: per r, Y per crop + 1 per map
    assert (n, fw) == (10, 2 * 10 + 1 + 30 * 7 + 2 * (10 + 30))
    cfg["metrics"]["insertion_start"] = "zero"  # the start is the zero image every crop shares: Y per crop only
    assert bench_precision.scoring_forwards(cfg, 3) == (10, 10 + 1 + 30 * 7 + 2 * (10 + 30))
