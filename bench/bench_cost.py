"""The cost model's forecast next to the measured time of the engine, per crop, for the registered methods.

Random VGG11 (20 classes) at --size px, one process, the same crops and baselines for every method:
- forecast: layersweep.cost's work per crop (pass + every layer) x the seconds of one forward / backward
  timed here by cost.measure_seconds, plus the Eigen methods' SVDs timed by cost.measure_svd_seconds (what
  the `results/cost.tsv` target does);
- measured: attribute_layers(...) over all 21 layers, best of --repeats, divided by the crops.
A ratio measured / forecast near 1 means the model's unit (full-network equivalents) is right for that pass.

    python bench/bench_cost.py [--size 112] [--crops 8] [--baselines 4] [--threads 2] [--methods a,b]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from layersweep import cost
from layersweep.attribution import attribute_layers, available_methods
from layersweep.attribution.registry import get_method


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="input side in pixels")
    ap.add_argument("--crops", type=int, default=8, help="crops (one batch)")
    ap.add_argument("--baselines", type=int, default=4, help="DeepLiftShap baselines")
    ap.add_argument("--max-pairs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default="", help="comma-separated (default: every gradient/deeplift method)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = {"data": {"crop_size": args.size}, "model": {}, "device": "cpu",
              "attribution": {"layers": "all", "n_baselines": args.baselines, "batch_size": args.crops,
                              "max_pairs": args.max_pairs}}
    model = cost.timing_model(config, "cpu")
    seconds = cost.measure_seconds(model, args.size, "cpu", batch=min(args.crops, 4), repeats=3)
    print(f"VGG11 (random, 20 classes), {args.size}x{args.size}, {args.crops} crops, {args.baselines} baselines, "
          f"{args.threads} threads")
    print(f"one forward {seconds.forward:.4f} s, one backward {seconds.backward:.4f} s per crop ({seconds.source})")
    methods = [m for m in args.methods.split(",") if m] or [
        m for m in available_methods() if get_method(m).pass_kind in ("gradient", "deeplift")]
    svd = cost.measure_svd_seconds(cost.svd_shapes(methods, config), workers=min(args.crops, args.threads))
    seconds = dataclasses.replace(seconds, svd=svd)
    if svd:
        print("one SVD per crop (numpy, one BLAS thread, crops in parallel), per (H*W, C): "
              + ", ".join(f"{r}x{c} {t:.4f} s" for (r, c), t in sorted(svd.items())))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.crops, 3, args.size, args.size, generator=g)
    b = torch.randn(args.baselines, 3, args.size, args.size, generator=g)
    t = torch.randint(0, 20, (args.crops,), generator=g)
    print(f"{'method':<14} {'pass':<10} {'fwd-eq':>7} {'bwd-eq':>7} {'svds':>5} {'forecast s/crop':>16} "
          f"{'measured s/crop':>16} {'measured/forecast':>18}")
    for name in methods:
        mc = cost.method_cost(name, config["attribution"], config)
        forecast = seconds.of(mc.total)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            attribute_layers(model, x, t, methods=[name], layers=list(range(21)), baselines=b,
                             max_pairs=args.max_pairs)
            best = min(best, time.perf_counter() - t0)
        measured = best / args.crops
        print(f"{name:<14} {mc.pass_kind:<10} {mc.total.forwards:>7.2f} {mc.total.backwards:>7.2f} "
              f"{mc.total.n_svds:>5.0f} {forecast:>16.4f} {measured:>16.4f} {measured / forecast:>18.2f}")


if __name__ == "__main__":
    main()
