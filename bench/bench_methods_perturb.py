"""Perturbation methods: the engine (all requested layers, tail-only forwards, group sharing) against the
library called once per layer, in one process on the same inputs; prints seconds and ratios.

- ablationcam vs pytorch-grad-cam AblationCAM; scorecam vs pytorch-grad-cam ScoreCAM;
- shapcam_pi / shapcam vs captum ShapleyValueSampling on the tail network, channels / positions as features.
Usage: python bench/bench_methods_perturb.py [--size 64] [--images 1] [--layers 13 14 15 16 17 18 19 20]
"""
import argparse
import time
import warnings

import captum.attr as captum_attr
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from layersweep.attribution import attribute_layers
from layersweep.attribution.reference import library_copy


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--layers", type=int, nargs="+", default=list(range(13, 21)))
    ap.add_argument("--orderings", type=int, default=1)
    ap.add_argument("--only", nargs="+", default=None, help="methods to run (default: all four)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20).eval()
    ref = library_copy(model)
    x = torch.randn(args.images, 3, args.size, args.size)
    t = torch.arange(args.images) % 20
    targets = [ClassifierOutputTarget(int(c)) for c in t]
    feats = list(ref.features)

    def library_cam(cls):
        for layer in args.layers:
            with getattr(pgc, cls)(model=ref, target_layers=[ref.features[layer]]) as cam:
                cam(x, targets)

    def captum_svs():
        for layer in args.layers:
            tail = nn.Sequential(*feats[layer + 1:], ref.avgpool, nn.Flatten(1), ref.classifier)
            with torch.no_grad():
                a = nn.Sequential(*feats[:layer + 1])(x)
            for i in range(args.images):
                c = a.shape[1]
                captum_attr.ShapleyValueSampling(tail).attribute(
                    a[i:i + 1], baselines=0.0, target=int(t[i]), feature_mask=torch.arange(c).view(1, c, 1, 1),
                    n_samples=args.orderings, perturbations_per_eval=64)

    def captum_svs_positions():
        for layer in args.layers:
            tail = nn.Sequential(*feats[layer + 1:], ref.avgpool, nn.Flatten(1), ref.classifier)
            prob = lambda z, tail=tail: torch.softmax(tail(z), dim=1)  # noqa: E731
            with torch.no_grad():
                a = nn.Sequential(*feats[:layer + 1])(x)
            h, w = a.shape[-2:]
            for i in range(args.images):
                captum_attr.ShapleyValueSampling(prob).attribute(
                    a[i:i + 1], baselines=0.0, target=int(t[i]), feature_mask=torch.arange(h * w).view(1, 1, h, w),
                    n_samples=args.orderings, perturbations_per_eval=64)

    opts = {"shapcam_pi": {"orderings": args.orderings}, "shapcam": {"permutations": args.orderings}}
    rows = [("ablationcam", lambda: library_cam("AblationCAM"), "pytorch-grad-cam AblationCAM per layer"),
            ("shapcam_pi", captum_svs, "captum ShapleyValueSampling per layer"),
            ("shapcam", captum_svs_positions, "captum ShapleyValueSampling (positions) per layer"),
            ("scorecam", lambda: library_cam("ScoreCAM"), "pytorch-grad-cam ScoreCAM per layer")]
    print(f"{args.images} image(s) {args.size}x{args.size}, layers {args.layers}, orderings {args.orderings}")
    for name, library, label in rows:
        if args.only and name not in args.only:
            continue
        lib = timed(library)
        eng = timed(lambda: attribute_layers(model, x, t, [name], args.layers,
                                             options={name: opts[name]} if name in opts else None))
        print(f"{name:12s} engine {eng:7.2f} s   {label} {lib:7.2f} s   ratio {lib / eng:5.1f}x")


if __name__ == "__main__":
    main()
