"""Seconds per crop: the reference libraries looped over the sites vs this engine's one shared pass.

A random network (20 classes), the same crops and baselines for both sides, in one process:
- captum LayerDeepLiftShap(model, module of site s), one call per site  vs  attribute_layers(..., ["deepliftshap"])
- pytorch-grad-cam GradCAMPlusPlus(model, [module of site s]), per site  vs  attribute_layers(..., ["gradcampp"])
Sites: every module of VGG11's features (--arch vgg11), every block output of a ResNet (--arch resnet50).
The reference libraries run on `layersweep.attribution.reference.library_copy` (one module per call, out of
place: docs/architectures.md). Each --arch runs in the same process, so VGG and ResNet ratios are comparable.

    python bench/bench_attribution.py [--arch vgg11 resnet50] [--size 112] [--crops 4] [--baselines 4]
"""
from __future__ import annotations

import argparse
import contextlib
import warnings

import torch
import torchvision

from common import best_of
from layersweep.attribution import attribute_layers


def _setup(arch: str):
    """(model, its library copy, site keys, {site: module of the copy}, description)."""
    from layersweep.attribution.reference import library_copy, library_module
    from layersweep.attribution.sites import site_table

    model = getattr(torchvision.models, arch)(weights=None, num_classes=20).eval()
    ref = library_copy(model)
    if arch.startswith("vgg"):
        sites = list(range(len(model.features)))
        modules = {l: ref.features[l] for l in sites}
        return model, ref, sites, modules, f"{len(sites)} layers"
    table = site_table(model)
    sites = [table[i].name for i in table.resolve("blocks")]
    modules = {s: library_module(ref, s) for s in sites}
    return model, ref, sites, modules, f"{len(sites)} block outputs"



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["vgg11"], help="vgg11 and/or a ResNet (resnet18, resnet50, ...)")
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
    import platform
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for arch in args.arch:
        torch.manual_seed(args.seed)
        model, ref, sites, modules, what = _setup(arch)
        x = torch.randn(args.crops, 3, args.size, args.size)
        base = torch.randn(args.baselines, 3, args.size, args.size)
        targets = torch.arange(args.crops) % 20
        n = args.crops
        print(f"{arch} (random, 20 classes), {args.size}x{args.size}, {n} crops, {args.baselines} baselines, {what}")

        def captum_loop():
            # detach: captum's attributions keep their autograd graph (a whole forward per site) otherwise
            return {s: LayerDeepLiftShap(ref, modules[s]).attribute(x, base, target=targets).sum(1).detach()
                    for s in sites}

        def gradcam_loop():
            out = {}
            with _raw_cams():
                for s in sites:
                    with GradCAMPlusPlus(model=ref, target_layers=[modules[s]]) as cam:
                        out[s] = torch.from_numpy(cam(x, [ClassifierOutputTarget(int(c)) for c in targets]))
            return out

        def engine(method):
            return lambda: attribute_layers(model, x, targets, methods=[method], layers=sites, baselines=base,
                                            max_pairs=args.max_pairs)[method]

        engine("gradcampp")()  # warm-up (first-call allocations, the trace)
        for method, ref_fn, ref_name in (("deepliftshap", captum_loop, f"captum LayerDeepLiftShap x{len(sites)}"),
                                         ("gradcampp", gradcam_loop, f"pytorch-grad-cam GradCAM++ x{len(sites)}")):
            w_ref, c_ref, out_ref = best_of(ref_fn, args.repeats)
            w_eng, c_eng, out_eng = best_of(engine(method), args.repeats)
            err = max(float((out_eng[s] - out_ref[s]).abs().max() / out_ref[s].abs().max().clamp_min(1e-30))
                      for s in sites)
            rows.append((arch, method, ref_name, w_ref / n, w_eng / n, c_ref / c_eng, err))
    print(f"best of {args.repeats}; wall seconds per crop; 'cpu x' = ratio of process CPU times (less sensitive to other jobs)")
    print(f"{'arch':<10}{'method':<14}{'reference':<36}{'ref s/crop':>11}{'engine s/crop':>15}{'speed-up':>10}{'cpu x':>8}{'max rel err':>13}")
    for arch, method, ref_name, r, e, cpu_ratio, err in rows:
        print(f"{arch:<10}{method:<14}{ref_name:<36}{r:>11.3f}{e:>15.4f}{r / e:>9.1f}x{cpu_ratio:>7.1f}x{err:>13.1e}")
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
