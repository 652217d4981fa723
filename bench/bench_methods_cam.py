"""Seconds per crop for the CAM-family methods of the shared gradient pass: pytorch-grad-cam called once
per layer vs one `attribute_layers` call for all 21 layers.

Random VGG11 (20 classes, random non-zero biases), the same crops for both sides, in one process. The
library runs on a copy with ReLU(inplace=False) and without `scale_cam_image` (raw cams, a little faster).
- hirescam, gradcam_elementwise, randomcam, shapleycam (ClassifierOutputReST), finercam (FinerWeightedTarget
  per crop), fem: the library class with target_layers=[features[l]], l = 0..20.
- eigencam, eigengradcam, segeigencam: the same, but the library's full SVD (U is (H*W)^2) takes about a
  minute per image at features.0-1 at 112 px, so they run on `--eigen-crops` crops.
- fullgrad: the library ignores target_layers and returns the sum of its terms, so its straightforward way
  is ONE FullGrad call (all its terms at once) against the engine's nine per-layer terms.
The issue's target is a ratio >= 20 per method.

    python bench/bench_methods_cam.py [--size 112] [--crops 4] [--eigen-crops 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import warnings

import numpy as np
import torch

from common import best_of, random_vgg11
from layersweep.attribution import attribute_layers
from layersweep.attribution.reference import library_copy

CLASSES = {"hirescam": "HiResCAM", "gradcam_elementwise": "GradCAMElementWise", "fem": "FEM",
           "randomcam": "RandomCAM", "finercam": "FinerCAM", "shapleycam": "ShapleyCAM",
           "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM", "segeigencam": "SegEigenCAM"}
EIGEN = ("eigencam", "eigengradcam", "segeigencam")
CONVS_AND_INPUT = [-1, 0, 3, 6, 8, 11, 13, 16, 18]



@contextlib.contextmanager
def _raw_cams():
    import pytorch_grad_cam.base_cam as base_cam
    import pytorch_grad_cam.fullgrad_cam as fullgrad_cam

    saved = base_cam.scale_cam_image, fullgrad_cam.scale_cam_image
    base_cam.scale_cam_image = fullgrad_cam.scale_cam_image = lambda cam, target_size=None: cam
    try:
        yield
    finally:
        base_cam.scale_cam_image, fullgrad_cam.scale_cam_image = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="input side in pixels")
    ap.add_argument("--crops", type=int, default=4, help="crops (one batch)")
    ap.add_argument("--eigen-crops", type=int, default=1, help="crops for the Eigen* methods (library: full SVD)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings, the same N for both sides")
    ap.add_argument("--methods", nargs="*", default=list(CLASSES) + ["fullgrad"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import (ClassifierOutputReST, ClassifierOutputTarget,
                                                      FinerWeightedTarget)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = random_vgg11(bias_std=0.1)
    ref = library_copy(model)
    x_all = torch.randn(max(args.crops, args.eigen_crops), 3, args.size, args.size)
    t_all = torch.arange(x_all.shape[0]) % 20
    layers = list(range(len(model.features)))
    print(f"VGG11 (random, 20 classes, random biases), {args.size}x{args.size}, {args.crops} crops "
          f"({args.eigen_crops} for Eigen*), {len(layers)} layers, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    def library_targets(method, x, t):
        if method == "shapleycam":
            return [ClassifierOutputReST(int(c)) for c in t]
        if method == "finercam":
            with torch.no_grad():
                logits = ref(x)
            out = []
            for i, c in enumerate(t):
                d = (logits[i] - logits[i, c]).abs()
                d[c] = float("inf")
                out.append(FinerWeightedTarget(int(c), [int(j) for j in d.argsort()[:3]], 1))
            return out
        return [ClassifierOutputTarget(int(c)) for c in t]

    def library_loop(method, x, t):
        def run():
            out = {}
            targets = library_targets(method, x, t)
            with _raw_cams():
                if method == "fullgrad":
                    with pgc.FullGrad(ref, []) as cam:
                        out["sum"] = torch.from_numpy(cam(x, targets))
                    return out
                for layer in layers:
                    if method == "randomcam":
                        np.random.seed(layer)
                    with getattr(pgc, CLASSES[method])(ref, [ref.features[layer]]) as cam:
                        out[layer] = torch.from_numpy(cam(x, targets))
            return out
        return run

    def engine(method, x, t):
        on = CONVS_AND_INPUT if method == "fullgrad" else layers
        return lambda: attribute_layers(model, x, t, methods=[method], layers=on)[method]

    attribute_layers(model, x_all[:1], t_all[:1], methods=["gradcam"], layers=layers)  # warm-up
    print(f"best of {args.repeats}; wall seconds per crop; 'cpu x' = ratio of process CPU times")
    print(f"{'method':<21}{'crops':>6}{'library s/crop':>16}{'engine s/crop':>15}{'speed-up':>10}{'cpu x':>8}"
          f"{'max rel err':>13}")
    rows = []
    for method in args.methods:
        n = args.eigen_crops if method in EIGEN else args.crops
        x, t = x_all[:n], t_all[:n]
        w_ref, c_ref, out_ref = best_of(library_loop(method, x, t), args.repeats)
        w_eng, c_eng, out_eng = best_of(engine(method, x, t), args.repeats)
        if method in ("fullgrad", "randomcam"):
            err = float("nan")  # different outputs (a sum vs terms; other random draws): parity is in the tests
        else:
            err = max(float((out_eng[l] - out_ref[l]).abs().max() / out_ref[l].abs().max().clamp_min(1e-30))
                      for l in layers if out_ref[l].any())
        rows.append((method, n, w_ref / n, w_eng / n, c_ref / c_eng, err))
        r, e = w_ref / n, w_eng / n
        print(f"{method:<21}{n:>6}{r:>16.3f}{e:>15.4f}{r / e:>9.1f}x{c_ref / c_eng:>7.1f}x{err:>13.1e}", flush=True)
    return rows


if __name__ == "__main__":
    main()
