"""What the study costs on this device, per precision: one command for a GPU owner (`make bench`).

Prints, on `--device` (auto = CUDA when present), for VGG11 (20 classes) at `--size` px:
1. scoring forwards: img/s at each batch size in each precision (float32, bf16, float16; the model run as the
   scoring stage runs it, `layersweep.precision.precision_model`), and the best batch size per precision;
2. the scoring stage itself (`score_shard` on the same maps) in each precision at `--compare-sizes`, and the
   speed-up of each reduced precision over float32 (the issue's bar: bf16 >= 1.3x);
3. attribution seconds per crop for each configured method (`attribution.methods` of `--config`, all layers,
   `n_baselines` baselines), in each precision;
4. the projected wall time of the study of `--config` (and of each config under config/studies/, if any) on
   this device, one job at a time: the attribution work per crop of each method from the cost model
   (`layersweep/cost.py`, forward / backward equivalents), plus the scoring forwards (plain: 2 per crop (1 with
   metrics.insertion_start: zero) + 1 + per map 1 + 2 (curve_points - 2); rescaled: 1 per crop + 1 per map and r), both in seconds of this device:
   one forward = 1 / (best img/s) of that precision, one backward = the float32 backward / forward ratio.

    .venv/bin/python bench/bench_precision.py                      # the real study's size (224 px)
    .venv/bin/python bench/bench_precision.py --size 32 --batches 2,4 --quick    # the test suite's call
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
import yaml

from layersweep.attribution import attribute_layers
from layersweep.device import resolve_device
from layersweep.attribution.sites import arch_site_table, site_table
from layersweep.metrics import score_shard
from layersweep.precision import PRECISIONS, cpu_bf16_support, precision_model

ROOT = Path(__file__).resolve().parents[1]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, device, repeats):
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def forward_rate(model, device, precision, size, batch, repeats):
    """img/s of scoring forwards (best of `repeats` after a warm-up)."""
    x = torch.randn(batch, 3, size, size, device=device)
    with precision_model(model, device, precision) as net:
        net(x)
        return batch / _best_of(lambda: net(x), device, repeats)


def scoring_seconds(model, device, precision, size, n_crops, layers, curve_points, batch, repeats):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(n_crops, size, size, 3), dtype=np.uint8)
    shard = {"method": np.array("gradcampp"), "crop_id": np.array([f"c{i}" for i in range(n_crops)]),
             "target": rng.integers(0, 20, n_crops).astype(np.int64), "layers": np.array(layers)}
    shard.update({f"map_{l}": rng.random((n_crops, max(1, size // 8), max(1, size // 8))).astype(np.float32)
                  for l in layers})
    return _best_of(lambda: score_shard(model, crops, shard, curve_points=curve_points, batch_size=batch,
                                        device=device, precision=precision, progress=False), device, repeats)


def attribution_seconds_per_crop(model, device, precision, size, method, layers, n_baselines, batch, max_pairs,
                                 repeats):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    b = torch.randn(n_baselines, 3, size, size, generator=g).to(device)
    t = torch.arange(batch) % 20
    run = lambda: attribute_layers(model, x, t, [method], layers, baselines=b, max_pairs=max_pairs,
                                   precision=precision)
    run()
    return _best_of(run, device, repeats) / batch


def scoring_forwards(cfg, n_layers):
    """Forwards of the study's scoring, counted from its config: plain and rescaled, per method."""
    n = cfg["data"]["n_images"]
    n = 1024 if n == "all" else int(n)
    P = int(cfg["metrics"]["curve_points"])
    per_crop = 1 if cfg["metrics"].get("insertion_start", "blur") == "zero" else 2  # a zero start is the zero image
    plain = per_crop * n + 1 + n * n_layers * (1 + 2 * (P - 2))
    rescaled = len(cfg["rescale"]["r"]) * (n + n * n_layers)
    return n, plain + rescaled


def _fmt_hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default=None, help="default 16..256 on CUDA, 16,32,64 on the CPU")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--compare-sizes", default="112,224")
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny settings: the test suite's smoke run")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # float16 on the CPU warns on every call
    device = resolve_device(args.device)
    precisions = args.precisions.split(",")
    batches = [int(v) for v in (args.batches or ("16,32,64,128,256" if device.type == "cuda" else "16,32,64")).split(",")]
    compare_sizes = [args.size] if args.quick else [int(v) for v in args.compare_sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    cfg = yaml.safe_load(Path(args.config).read_text())
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=20).eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    capability, native_bf16 = cpu_bf16_support()
    print(f"# device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"VGG11 at {args.size} px")
    # speed figures are only comparable between CPUs of one kind: bf16 is 3-5x slower without native support
    print(f"# CPU: capability {capability}, native bf16 (AVX-512 BF16 or AMX): {'yes' if native_bf16 else 'no'}")

    print("\n## scoring forwards, img/s per batch size")
    best = {}
    for prec in precisions:
        rates = {bs: forward_rate(model, device, prec, args.size, bs, repeats) for bs in batches}
        bs = max(rates, key=rates.get)
        best[prec] = (bs, rates[bs])
        print(f"{prec:8s} " + "  ".join(f"b{b}: {r:8.1f}" for b, r in rates.items()) + f"   best: batch {bs}, {rates[bs]:.1f} img/s")

    print("\n## scoring stage (score_shard, same maps), seconds and speed-up over float32")
    n_crops, layers, P = (2, [0, 5], 4) if args.quick else (4, [2, 10, 20], 11)
    for size in compare_sizes:
        secs = {p: scoring_seconds(model, device, p, size, n_crops, layers, P, best[p][0], repeats) for p in precisions}
        print(f"{size} px: " + ", ".join(f"{p} {s:.2f} s ({secs['float32'] / s:.2f}x)" for p, s in secs.items()))

    att = cfg["attribution"]
    methods = att["methods"]
    all_layers = site_table(model).resolve(att["layers"])
    n_layers = len(all_layers)
    per_crop = {}
    att_batch, n_base = (1, 2) if args.quick else (int(att["batch_size"]), int(att["n_baselines"]))
    print(f"\n## attribution, seconds per crop, {n_layers} layers, {n_base} baselines, {att_batch} crops per pass")
    for m in methods:
        per_crop[m] = {p: attribution_seconds_per_crop(model, device, p, args.size, m, all_layers, n_base,
                                                       att_batch, att["max_pairs"], repeats) for p in precisions}
        print(f"{m:14s} " + "  ".join(f"{p}: {s:.3f} s" for p, s in per_crop[m].items()))

    # attribution: the cost model's work per crop (layersweep/cost.py, the same as the cost target's), in
    # seconds of this device: a forward per precision from the scoring rates above, a backward from the cost
    # model's float32 backward / forward ratio measured here
    from layersweep import cost

    base = cost.measure_seconds(model, args.size, device, batch=2 if args.quick else 4, repeats=repeats)
    bwd_per_fwd = base.backward / base.forward if base.forward > 0 else cost.ASSUMED_BACKWARD_PER_FORWARD
    print("\n## projected wall time of each study on this device (one job at a time), per precision")
    print("(attribution: work per crop from layersweep/cost.py; scoring: forwards counted from the config; "
          f"seconds from this run's rates at {args.size} px, scaled by pixels; backward = {bwd_per_fwd:.2f} forwards)")
    from layersweep.studies import study_config

    studies = [Path(args.config)] + sorted((ROOT / "config" / "studies").glob("*.yaml"))
    for path in studies:
        # a study file is config.yaml with the set-up's keys on top (layersweep.studies); its own arch's layers.
        # Its seconds are this run's model's (VGG11 by default): a VGG16 study's forwards cost ~2x more.
        study = yaml.safe_load(path.read_text()) if path == Path(args.config) else study_config(path, ROOT / "config.yaml")
        if not isinstance(study, dict) or "attribution" not in study or "data" not in study:
            continue
        arch = study.get("model", {}).get("arch", "vgg11"), study.get("model", {}).get("source", "torchvision")
        s_layers = len(arch_site_table(*arch).resolve(study["attribution"]["layers"]))
        scale = (int(study["data"]["crop_size"]) / args.size) ** 2  # forwards' cost grows with the pixels
        n, fw = scoring_forwards(study, s_layers)
        work = [cost.method_cost(m, study["attribution"], study).total for m in study["attribution"]["methods"]]
        parts = []
        for p in precisions:
            fwd = scale / best[p][1]
            seconds = cost.Seconds(fwd, bwd_per_fwd * fwd, f"{p} on {device}")
            att_s = sum(seconds.of(w) for w in work) * n
            score_s = len(work) * fw * fwd
            parts.append(f"{p} {_fmt_hours(att_s + score_s)} (attribution {_fmt_hours(att_s)}, scoring {_fmt_hours(score_s)})")
        print(f"{path.name}: {n} crops, {len(work)} methods, {s_layers} layers: " + "; ".join(parts))

if __name__ == "__main__":
    main()
