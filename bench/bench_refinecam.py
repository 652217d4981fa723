"""Seconds per crop: RefineCAM (Grad-CAM++ base, VGG11's pool layers features.20, 15, 10, 5) and ARCC on its maps,
layersweep against pytorch-grad-cam 1.5.7, in one process, on the same random VGG11 and the same crops.

- RefineCAM: one `attribute_layers(..., ["refinecam"], [5, 10, 15, 20])` call gives all four prefixes (20; 20*15;
  20*15*10; 20*15*10*5) from one Grad-CAM++ pass. pytorch-grad-cam's `RefineCAM` runs one Grad-CAM++ (a forward
  and a full backward) per layer and returns the full product only; every prefix takes four calls (1+2+3+4 = 10
  base CAMs). Targets: >= 4x against one library call.
- ARCC of the full RefineCAM map (features.5): `metrics.arcc.arcc_scores` (ROAD solved by SuperLU, the imputed
  images in shared forward batches; coherency recomputes RefineCAM in one pass) against `metrics.arcc.ARCC` with a
  RefineCAM base (its ROADCombined, and four base CAMs for coherency), per crop with its ROAD noise seeded as ours.
  Target: >= 3x.
Random weights (no downloads), random non-zero biases; the values of both sides are printed side by side.

    python bench/bench_refinecam.py [--size 224] [--crops 2] [--arcc-crops 1] [--threads 2] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch

from common import best_of, random_vgg11
from layersweep.attribution import attribute_layers
from layersweep.attribution.reference import library_copy

POOLS = [20, 15, 10, 5]  # deep -> shallow



class LogitTargets:
    """ARCC's base method: ARCC hands one target list to ROAD (softmax targets here, as layersweep's ROAD) and to
    the CAM; the CAM explains the logit of the same class, as the engine does."""

    def __init__(self, cam):
        self.cam = cam

    def __call__(self, input_tensor, targets):
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return self.cam(input_tensor, [ClassifierOutputTarget(t.category) for t in targets])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--crops", type=int, default=2, help="crops of the RefineCAM timing (one batch)")
    ap.add_argument("--arcc-crops", type=int, default=1, help="crops of the ARCC timing (0: skip ARCC)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings, the same N for both sides")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.metrics.arcc import ARCC
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    from layersweep.metrics import normalize_maps
    from layersweep.metrics.arcc import arcc_scores

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = random_vgg11(bias_std=0.05)
    ref = library_copy(model)  # the library's hooks need ReLU(inplace=False)
    x = torch.randn(args.crops, 3, args.size, args.size)
    t = torch.randint(0, 20, (args.crops,))
    modules = [ref.features[i] for i in POOLS]

    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(a machine shared with other jobs: times vary)")
    print(f"random VGG11 (20 classes), {args.size} px, Grad-CAM++ base at features {POOLS}")

    def ours_refine():
        return attribute_layers(model, x, t, ["refinecam"], POOLS)["refinecam"]

    def library(layers, images=x, targets=t):
        cam = pgc.RefineCAM(ref, layers, base_method=pgc.GradCAMPlusPlus)
        try:
            return cam(images, [ClassifierOutputTarget(int(c)) for c in targets])
        finally:
            for base in cam.base_cam_per_layer:
                base.activations_and_grads.release()

    # one untimed call of each side first: the first call of a process pays one-time set-up (oneDNN kernels,
    # the method registry's imports, the library's hooks) that a run over many batches does not
    attribute_layers(model, x[:1], t[:1], ["refinecam"], POOLS)
    library(modules[:1], x[:1], t[:1])
    w_ours, c_ours, ours = best_of(ours_refine, args.repeats)
    w_lib, c_lib, lib = best_of(lambda: library(modules), args.repeats)
    w_pre, c_pre, _ = best_of(lambda: [library(modules[:k]) for k in range(1, 5)], args.repeats)
    gap = float(np.abs(ours[5].numpy() - lib).max())
    n = args.crops
    print(f"\nRefineCAM, {n} crops in one batch (s/crop, wall | process CPU):")
    print(f"  layersweep, all 4 prefixes in one pass : {w_ours / n:7.3f} | {c_ours / n:7.3f}")
    print(f"  pytorch-grad-cam RefineCAM, full map   : {w_lib / n:7.3f} | {c_lib / n:7.3f}   "
          f"ratio {w_lib / w_ours:.1f}x wall, {c_lib / c_ours:.1f}x CPU (target >= 4x)")
    print(f"  pytorch-grad-cam, every prefix (4 calls): {w_pre / n:7.3f} | {c_pre / n:7.3f}   "
          f"ratio {w_pre / w_ours:.1f}x wall, {c_pre / c_ours:.1f}x CPU")
    print(f"  max |layersweep - library| of the full map: {gap:.1e}")

    if args.arcc_crops < 1:
        return
    k = min(args.arcc_crops, n)
    xa, ta = x[:k], t[:k]
    maps01 = normalize_maps(ours[5][:k], (args.size, args.size))[0]
    seeds = [1000 + i for i in range(k)]

    def attribute(images, targets):
        return attribute_layers(model, images, targets, ["refinecam"], POOLS)["refinecam"]

    def ours_arcc():
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return arcc_scores(model, xa, ta, maps01, attribute, map_layers=[5] * k, generators=gens, solver="direct")

    metric = ARCC(base_method=LogitTargets(pgc.RefineCAM(ref, modules, base_method=pgc.GradCAMPlusPlus)),
                  road_percentiles=[20, 40, 60, 80])

    def library_arcc():
        out = []
        for i in range(k):
            torch.manual_seed(seeds[i])  # ROAD's noise: the library draws from the global RNG
            out.append(float(metric(xa[i:i + 1], maps01[i:i + 1].numpy(),
                                    [ClassifierOutputSoftmaxTarget(int(ta[i]))], ref)[0]))
        return np.array(out)

    w_oa, c_oa, res = best_of(ours_arcc, args.repeats)
    w_la, c_la, lib_a = best_of(library_arcc, args.repeats)
    print(f"\nARCC of the full RefineCAM map, {k} crop(s) (s/crop, wall | process CPU):")
    print(f"  layersweep arcc_scores        : {w_oa / k:7.3f} | {c_oa / k:7.3f}")
    print(f"  pytorch-grad-cam metrics ARCC : {w_la / k:7.3f} | {c_la / k:7.3f}   "
          f"ratio {w_la / w_oa:.1f}x wall, {c_la / c_oa:.1f}x CPU (target >= 3x)")
    print(f"  values: layersweep {np.round(res['arcc'].numpy(), 6).tolist()}, library {np.round(lib_a, 6).tolist()} "
          f"(ROAD {np.round(res['road_combined'].numpy(), 5).tolist()}, coherency "
          f"{np.round(res['coherency'].numpy(), 5).tolist()}, complexity {np.round(res['complexity'].numpy(), 5).tolist()})")


if __name__ == "__main__":
    main()
