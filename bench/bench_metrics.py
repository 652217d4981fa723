"""Benchmark of the scoring stage on a random VGG11 (20 classes), one process, the same maps for every path.

Prints
- seconds per map of a naive loop (one forward per curve point, `--naive-batch` images per forward, the
  report's code) and of `score_shard`, and their ratio;
- the stage's efficiency = forwards it needs x (seconds per image of one forward at the best batch size
  measured) / its time (1.0 = nothing but forwards at the best batch size). The machine is shared, so the
  reference is also measured as the same number of plain forwards at the best batch size, timed right before
  and right after the stage, and the efficiency is given against both references;
- maps per second of `rescale_maps` and of the report's Adam loop (`rescale_maps_adam`), and their ratio.

    .venv/bin/python bench/bench_metrics.py [--size 112] [--maps 16] [--curve-points 30]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from layersweep.metrics import blur_images, curve_counts, normalize_maps, rescale_maps, score_shard, target_probs
from layersweep.metrics.rescale import rescale_maps_adam
from layersweep.preprocess import to_model_input


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


@torch.no_grad()
def forward_seconds_per_image(model, x, batch, min_seconds=2.0):
    """Seconds per image of a plain forward at `batch` images (after one warm-up forward)."""
    xb = x[:1].expand(batch, -1, -1, -1).contiguous()
    model(xb)
    n, t0 = 0, time.perf_counter()
    while True:
        model(xb)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2:
            return dt / (n * batch)


@torch.no_grad()
def plain_forwards_seconds(model, x, n_images, batch):
    """Seconds for `n_images` forwards of plain images, `batch` per forward: the stage's floor."""
    xb = x[:1].expand(batch, -1, -1, -1).contiguous()
    t0 = time.perf_counter()
    for s in range(0, n_images, batch):
        model(xb[: min(batch, n_images - s)])
    return time.perf_counter() - t0


@torch.no_grad()
def naive_scores(model, x, maps01, targets, curve_points, batch, kernel, sigma):
    """The report's loop: for each group of `batch` maps, Y and O, then one forward per curve point for the
    deletion and for the insertion images, pixels picked by a per-map sorted index."""
    hw = maps01[0].numel()
    counts = curve_counts(curve_points, hw)
    for s in range(0, len(maps01), batch):
        xb, mb, tb = x[s:s + batch], maps01[s:s + batch], targets[s:s + batch]
        target_probs(model(xb), tb)
        target_probs(model(mb[:, None] * xb), tb)
        order = torch.argsort(mb.reshape(len(mb), -1), dim=1, descending=True, stable=True)
        blurred = blur_images(xb, kernel, sigma)
        for n in counts:
            d = xb.clone().reshape(len(xb), 3, -1)
            ins = blurred.clone().reshape(len(xb), 3, -1)
            for j in range(len(xb)):
                idx = order[j, :n]
                d[j][:, idx] = 0
                ins[j][:, idx] = xb[j].reshape(3, -1)[:, idx]
            target_probs(model(d.view_as(xb)), tb)
            target_probs(model(ins.view_as(xb)), tb)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=112, help="crop size H = W (default 112)")
    ap.add_argument("--maps", type=int, default=16, help="maps scored by score_shard (2 layers per crop)")
    ap.add_argument("--curve-points", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64, help="metrics.batch_size for score_shard")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="forward batch sizes to time")
    ap.add_argument("--naive-maps", type=int, default=2)
    ap.add_argument("--naive-batch", type=int, default=2, help="images per forward in the naive loop")
    ap.add_argument("--rescale-maps", type=int, default=256)
    ap.add_argument("--adam-maps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = torchvision.models.vgg11(num_classes=20).eval()
    H = args.size
    layers = {5: H // 4, 15: H // 16}  # a conv layer at 1/4 and one at 1/16 of the crop size
    n_crops = max(1, args.maps // len(layers))
    n_maps = n_crops * len(layers)
    crops = rng.integers(0, 256, size=(n_crops, H, H, 3), dtype=np.uint8)
    shard = {"method": np.array("bench"), "crop_id": np.array([f"c{i}" for i in range(n_crops)]),
             "target": rng.integers(0, 20, size=n_crops).astype(np.int64),
             "layers": np.array(list(layers), dtype=np.int64)}
    for layer, h in layers.items():
        shard[f"map_{layer}"] = rng.normal(size=(n_crops, h, h)).astype(np.float32)
    x = to_model_input(crops)
    P = args.curve_points
    print(f"# bench_metrics: VGG11 (random, 20 classes), input {H}x{H}, {n_maps} maps ({n_crops} crops x "
          f"{len(layers)} layers), {P} curve points, torch {torch.__version__}, {torch.get_num_threads()} threads")

    # forward cost per image at each batch size
    per_img = {}
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        per_img[b] = forward_seconds_per_image(model, x, b)
        print(f"forward batch {b:4d}: {per_img[b] * 1e3:8.2f} ms/image")
    best_b = min(per_img, key=per_img.get)

    # score_shard, between two runs of the same number of plain forwards at the best batch size
    forwards = 2 * n_crops + 1 + n_maps * (1 + 2 * (P - 2))
    t_before = plain_forwards_seconds(model, x, forwards, best_b)
    t_shard, df = timed(lambda: score_shard(model, crops, shard, curve_points=P, batch_size=args.batch_size,
                                            device="cpu", progress=False))
    t_after = plain_forwards_seconds(model, x, forwards, best_b)
    eff = forwards * per_img[best_b] / t_shard
    eff_adj = 0.5 * (t_before + t_after) / t_shard
    # naive loop on the first maps, same normalisation
    maps01 = torch.cat([normalize_maps(torch.from_numpy(shard[f"map_{l}"]), H)[0] for l in layers])
    xs = x.repeat(len(layers), 1, 1, 1)
    ts = torch.as_tensor(shard["target"]).repeat(len(layers))
    k = min(args.naive_maps, n_maps)
    t_naive, _ = timed(lambda: naive_scores(model, xs[:k], maps01[:k], ts[:k], P, args.naive_batch, 11, 5.0))
    print(f"naive loop (batch {args.naive_batch}, {2 * P + 2} forwards/map): {t_naive / k:8.3f} s/map")
    print(f"score_shard (batch {args.batch_size}, {forwards / n_maps:.1f} forwards/map): {t_shard / n_maps:8.3f} s/map")
    print(f"speed-up naive / score_shard: {t_naive / k / (t_shard / n_maps):.2f}x")
    print(f"efficiency: {forwards} forwards x {per_img[best_b] * 1e3:.2f} ms/image (best batch {best_b}) / "
          f"{t_shard:.1f} s = {eff:.3f}  (target >= 0.9)")
    print(f"efficiency against {forwards} plain forwards at batch {best_b} timed just before / after "
          f"({t_before:.1f} s / {t_after:.1f} s): {eff_adj:.3f}  (target >= 0.9)")
    assert df["deletion_auc"].notna().all()

    # rescaling: vectorised root finder vs the report's Adam loop
    g = torch.Generator().manual_seed(args.seed)
    low = torch.randn(args.rescale_maps, 7, 7, generator=g)
    m01, _ = normalize_maps(low, H)
    t_root, (_, p, clamped) = timed(lambda: rescale_maps(m01, 0.3, 1e-4))
    t_adam, steps = timed(lambda: [rescale_maps_adam(m01[i], 0.3, 1e-4, lr=0.1, max_steps=10_000)[2]
                                   for i in range(min(args.adam_maps, len(m01)))])
    na = min(args.adam_maps, len(m01))
    rate_root, rate_adam = len(m01) / t_root, na / t_adam
    print(f"rescale_maps (r=0.3, rtol=1e-4, {len(m01)} maps {H}x{H}, {int(clamped.sum())} clamped): "
          f"{rate_root:10.1f} maps/s")
    print(f"Adam loop (lr 0.1, <= 10000 steps, {na} maps, steps {steps}): {rate_adam:10.2f} maps/s")
    print(f"speed-up root finder / Adam: {rate_root / rate_adam:.0f}x  (target >= 100x)")


if __name__ == "__main__":
    main()
