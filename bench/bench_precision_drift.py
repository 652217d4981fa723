"""Drift of reduced precision: the same maps scored in float32 and in bf16 / float16, and the maps themselves.

Prints, per layer and metric (AD, IC, deletion / insertion AUC; ADD when the metric registry has it), the
largest per-crop difference |reduced - float32| and the difference of the means, the share of crops whose IC
indicator flips, and for attribution the Spearman rank correlation of each reduced-precision map with its
float32 map (median and minimum over crops), and the seconds each precision took.

Scoring drift is measured on the float32 maps (so it is the drift of the scoring forwards alone); attribution
drift on the maps of the same crops computed in each precision.

    .venv/bin/python bench/bench_precision_drift.py --data demo     # synthetic demo VOC (written to a tmp dir)
    .venv/bin/python bench/bench_precision_drift.py --data voc --voc-root /data/voc2007  # real VOC photos

The model is torchvision's VGG11 with a 20-class head, seeded random weights (this machine has no network
for the ImageNet weights); `--weights` takes a local vgg11-8a719046.pth.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from scipy.stats import spearmanr

from layersweep.attribution import attribute_layers
from layersweep.data import build_split
from layersweep.metrics import score_shard
from layersweep.preprocess import to_model_input

METRICS = ["ad", "ic", "add", "deletion_auc", "insertion_auc"]


def load_crops(which: str, size: int, n: int, voc_root: str | None = None):
    if which == "voc":
        if voc_root is None:
            raise SystemExit("--data voc needs --voc-root, the directory holding VOCdevkit/VOC2007.")
        voc = Path(voc_root) / "VOCdevkit" / "VOC2007"
        if not voc.is_dir():
            raise SystemExit(f"--voc-root {voc_root} has no VOCdevkit/VOC2007 directory.")
        parts = [build_split(voc, s, size, progress=False) for s in ("test", "trainval")]
    else:
        from layersweep.synthetic import write_synthetic_voc

        tmp = Path(tempfile.mkdtemp(prefix="layersweep-drift-"))
        voc = write_synthetic_voc(tmp, n_images=max(24, n), image_size=160, seed=0)
        parts = [build_split(voc, s, size, progress=False) for s in ("test", "trainval")]
    crops = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1]["label"].to_numpy() for p in parts])
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(crops))
    need = n + 4  # n evaluated, 4 baselines
    if len(crops) < need:
        raise SystemExit(f"only {len(crops)} crops in the {which} data; ask for --crops {len(crops) - 4} or fewer.")
    return crops[pick[:n]], labels[pick[:n]], crops[pick[n:need]]


def make_model(weights, head_scale):
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=20)
    if weights:
        state = torch.load(weights, map_location="cpu")
        state = {k: v for k, v in state.items() if not k.startswith("classifier.6")}
        model.load_state_dict(state, strict=False)
    with torch.no_grad():  # a random head gives a near-uniform softmax (scores ~1/20); spread it like a trained one
        model.classifier[6].weight.mul_(head_scale)
    return model.eval()


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-map Spearman correlation with average ranks (the zeros of clamped CAM maps are ties)."""
    return np.array([spearmanr(x, y).statistic for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy())])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=["demo", "voc"], default="demo")
    ap.add_argument("--voc-root", default=None, help="with --data voc: the directory holding VOCdevkit/VOC2007")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--layers", default="2,7,12,17,20")
    ap.add_argument("--methods", default="gradcampp,deepliftshap")
    ap.add_argument("--curve-points", type=int, default=11)
    ap.add_argument("--precisions", default="bf16,float16")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--head-scale", type=float, default=10.0, help="factor on the random head's weights")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    layers = [int(v) for v in args.layers.split(",")]
    methods = args.methods.split(",")
    reduced = args.precisions.split(",")
    crops, labels, base = load_crops(args.data, args.size, args.crops, args.voc_root)
    model = make_model(args.weights, args.head_scale)
    x, b, t = to_model_input(crops), to_model_input(base), torch.as_tensor(labels)
    print(f"# precision drift: {args.data} data, {len(crops)} crops at {args.size} px, VGG11 "
          f"({'ImageNet features' if args.weights else 'seeded random weights'}), layers {layers}, "
          f"{args.curve_points} curve points, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        y = torch.softmax(model(x), 1).gather(1, t[:, None])[:, 0]
    print(f"# target scores: median {y.median():.3f}, range {y.min():.3f}..{y.max():.3f} (head x {args.head_scale:g})")

    maps, secs = {}, {}
    for prec in ["float32"] + reduced:
        t0 = time.perf_counter()
        maps[prec] = attribute_layers(model, x, t, methods, layers, baselines=b, precision=prec)
        secs[prec] = time.perf_counter() - t0
    print("\n## attribution: Spearman rank correlation of each map with its float32 map (median / min over crops)")
    rows = []
    for m in methods:
        for layer in layers:
            row = {"method": m, "layer": layer}
            for prec in reduced:
                rho = spearman(maps["float32"][m][layer], maps[prec][m][layer])
                row[f"{prec} median"], row[f"{prec} min"] = np.median(rho), rho.min()
            rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("seconds: " + ", ".join(f"{p} {s:.1f}" for p, s in secs.items()))

    m = methods[-1]
    shard = {"method": np.array(m), "crop_id": np.array([f"c{i}" for i in range(len(crops))]),
             "target": labels.astype(np.int64), "layers": np.array(layers)}
    shard.update({f"map_{layer}": maps["float32"][m][layer].numpy() for layer in layers})
    tables, secs = {}, {}
    for prec in ["float32"] + reduced:
        t0 = time.perf_counter()
        tables[prec] = score_shard(model, crops, shard, curve_points=args.curve_points, batch_size=args.batch_size,
                                   device="cpu", precision=prec, progress=False)
        secs[prec] = time.perf_counter() - t0
    ref = tables["float32"]
    metrics = [c for c in METRICS if c in ref.columns]
    print(f"\n## scoring drift of the {m} float32 maps: max |per-crop diff| and |diff of means| per layer, "
          "IC flips = share of crops whose IC indicator changes")
    rows = []
    for prec in reduced:
        tab = tables[prec]
        for layer in layers:
            a, r = ref[ref.layer == layer], tab[tab.layer == layer]
            row = {"precision": prec, "layer": layer}
            for c in metrics:
                d = r[c].to_numpy() - a[c].to_numpy()
                row[f"{c} max"] = np.nanmax(np.abs(d))
                row[f"{c} mean"] = abs(np.nanmean(r[c]) - np.nanmean(a[c]))
            row["IC flips"] = np.mean(r["ic"].to_numpy() != a["ic"].to_numpy())
            rows.append(row)
        all_d = {c: np.nanmax(np.abs(tab[c].to_numpy() - ref[c].to_numpy())) for c in metrics}
        print(f"{prec}: over all layers max |per-crop diff| " + ", ".join(f"{c} {v:.4g}" for c, v in all_d.items()))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("seconds: " + ", ".join(f"{p} {s:.1f}" for p, s in secs.items()))
    print("AD in percent points, IC in percent points (0/100 per crop), AUCs in probability x k units.")


if __name__ == "__main__":
    main()
