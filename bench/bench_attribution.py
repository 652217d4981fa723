"""Seconds per crop: the reference libraries looped over the 21 layers vs this engine's one shared pass.

Random VGG11 (20 classes), the same crops and baselines for both sides, in one process:
- captum LayerDeepLiftShap(model, features[l]) for l = 0..20  vs  attribute_layers(..., ["deepliftshap"])
- pytorch-grad-cam GradCAMPlusPlus(model, [features[l]])      vs  attribute_layers(..., ["gradcampp"])
The reference libraries run on a copy of the model with ReLU(inplace=False) (see docs/methods.md's note on
in-place ReLUs). The issue's target is a ratio >= 20 for each method on this CPU.

    python bench/bench_attribution.py [--size 112] [--crops 4] [--baselines 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
import warnings

import torch
import torchvision

from layersweep.attribution import attribute_layers


def _reference_model(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return ref


def _time(fn, repeats: int):
    """Best of `repeats` (wall seconds, process CPU seconds): other jobs on a shared machine only add time."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="input side in pixels")
    ap.add_argument("--crops", type=int, default=4, help="crops (one batch)")
    ap.add_argument("--baselines", type=int, default=4, help="DeepLiftShap baselines")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--max-pairs", type=int, default=64, help="engine: (image, baseline) pairs per DeepLift chunk")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings, the same N for both sides")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from captum.attr import LayerDeepLiftShap
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    warnings.filterwarnings("ignore")  # captum warns on every call that it sets hooks
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = torchvision.models.vgg11(weights=None, num_classes=20).eval()
    ref = _reference_model(model)
    x = torch.randn(args.crops, 3, args.size, args.size)
    base = torch.randn(args.baselines, 3, args.size, args.size)
    targets = torch.arange(args.crops) % 20
    layers = list(range(len(model.features)))
    n = args.crops
    print(f"VGG11 (random, 20 classes), {args.size}x{args.size}, {n} crops, {args.baselines} baselines, "
          f"{len(layers)} layers, torch {torch.__version__}, {torch.get_num_threads()} threads")

    def captum_loop():
        # detach: captum's attributions keep their autograd graph (a whole forward per layer) otherwise
        return {l: LayerDeepLiftShap(ref, ref.features[l]).attribute(x, base, target=targets).sum(1).detach()
                for l in layers}

    def gradcam_loop():
        out = {}
        with _raw_cams():
            for l in layers:
                with GradCAMPlusPlus(model=ref, target_layers=[ref.features[l]]) as cam:
                    out[l] = torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in targets]))
        return out

    def engine(method):
        return lambda: attribute_layers(model, x, targets, methods=[method], layers=layers, baselines=base,
                                        max_pairs=args.max_pairs)[method]

    engine("gradcampp")()  # warm-up (first-call allocations)
    rows = []
    for method, ref_fn, ref_name in (("deepliftshap", captum_loop, "captum LayerDeepLiftShap x21"),
                                     ("gradcampp", gradcam_loop, "pytorch-grad-cam GradCAMPlusPlus x21")):
        w_ref, c_ref, out_ref = _time(ref_fn, args.repeats)
        w_eng, c_eng, out_eng = _time(engine(method), args.repeats)
        err = max(float((out_eng[l] - out_ref[l]).abs().max() / out_ref[l].abs().max().clamp_min(1e-30)) for l in layers)
        rows.append((method, ref_name, w_ref / n, w_eng / n, c_ref / c_eng, err))
    print(f"best of {args.repeats}; wall seconds per crop; 'cpu x' = ratio of process CPU times (less sensitive to other jobs)")
    print(f"{'method':<14}{'reference':<38}{'ref s/crop':>11}{'engine s/crop':>15}{'speed-up':>10}{'cpu x':>8}{'max rel err':>13}")
    for method, ref_name, r, e, cpu_ratio, err in rows:
        print(f"{method:<14}{ref_name:<38}{r:>11.3f}{e:>15.4f}{r / e:>9.1f}x{cpu_ratio:>7.1f}x{err:>13.1e}")
    return rows


@contextlib.contextmanager
def _raw_cams():
    """pytorch-grad-cam without `scale_cam_image` (min-max + resize): the raw cam the engine returns.

    It also makes the reference a little faster, so the speed-up printed is conservative.
    """
    import pytorch_grad_cam.base_cam as base_cam

    saved = base_cam.scale_cam_image
    base_cam.scale_cam_image = lambda cam, target_size=None: cam
    try:
        yield
    finally:
        base_cam.scale_cam_image = saved


if __name__ == "__main__":
    main()
