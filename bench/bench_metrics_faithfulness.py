"""Faithfulness metrics that recompute or perturb: the batched metric against the library called per layer (or
per map), in one process, on the same inputs and the same seeded perturbations; prints seconds and ratios.

One function per metric (`@bench("name")`), selected with --only:
- sensitivity: `sensitivity_max_layers` around the engine (every layer per perturbed batch) vs captum's
  `sensitivity_max` around `LayerDeepLiftShap(model, features[l])` (or `LayerGradCam`) called once per layer.
  Issue 11's target: >= 10x.
- coherency: ADCC's coherency of every (crop, layer) map, explanation images batched across crops and layers
  through the engine vs captum's `LayerDeepLiftShap` on each layer's explanation images (one call per layer).
- road: `road_scores` (the 2P imputed images of all maps in shared forward batches, one linear solve per (image,
  mask)) vs pytorch-grad-cam's `ROADCombined` called once per layer (all crops) and once per map, on the
  engine's Grad-CAM++ maps (upsampled, min-max normalised), each map's pytorch-grad-cam RNG seeded as its
  generator (the same noise); plus where the time goes: the imputations alone and the forwards each way.
- infidelity: `infidelity_scores` (every layer's maps of a crop from its K + 1 forwards) vs captum's `infidelity`
  called once per layer and once per map, with the same perturbations.
road and infidelity print wall and process-CPU seconds, the minimum over --repeat rounds in which each way runs
in turn (the machine is shared: a passing load then hits every way alike).

Random VGG11 (20 classes); the reference libraries run on a copy with ReLU(inplace=False).

    python bench/bench_metrics_faithfulness.py [--only sensitivity coherency road infidelity] [--size 64]
           [--crops 2] [--baselines 4] [--samples 10] [--layers 0 1 ... 20] [--method deepliftshap|gradcam]
           [--threads 2] [--batch-size 64] [--repeat 2] [--with-cg]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
import torchvision

from common import best_of
from layersweep.attribution.reference import library_copy

BENCHES = {}


def bench(name):
    def deco(fn):
        BENCHES[name] = fn
        return fn
    return deco


def timed(fn):
    w0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - w0, out


def _like(inputs, out):
    """captum's sensitivity_max iterates the explanation of its tuple input as a tuple; layer methods return a tensor."""
    return (out,) if isinstance(inputs, tuple) else out


def _first(inputs):
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _captum_layer_method(s, layer):
    from captum.attr import LayerDeepLiftShap, LayerGradCam

    if s["method"] == "deepliftshap":
        dls = LayerDeepLiftShap(s["ref"], s["ref"].features[layer])
        return lambda inputs, target: dls.attribute(inputs, s["baselines"], target=target).sum(1).detach()
    gc = LayerGradCam(s["ref"], s["ref"].features[layer])
    return lambda inputs, target: gc.attribute(inputs, target=target, relu_attributions=True).sum(1).detach()


def _engine_attribute(s):
    from layersweep.attribution import attribute_layers

    def attribute(images, targets):
        return attribute_layers(s["model"], images, targets, [s["method"]], s["layers"], baselines=s["baselines"],
                                max_pairs=s["max_pairs"])[s["method"]]
    return attribute


@bench("sensitivity")
def bench_sensitivity(s, args):
    from captum.metrics import sensitivity_max

    from layersweep.metrics.sensitivity import sensitivity_max_layers, uniform_perturbations

    x, t, K, radius = s["x"], s["t"], args.samples, 0.02
    gens = lambda: [torch.Generator().manual_seed(1000 + i) for i in range(len(x))]  # noqa: E731
    noise = torch.cat([uniform_perturbations(x[c], K, radius, g) for c, g in enumerate(gens())])

    def library():
        out = {}
        for layer in s["layers"]:
            explain = _captum_layer_method(s, layer)
            out[layer] = sensitivity_max(lambda inputs, target: _like(inputs, explain(_first(inputs), target)), x,
                                         perturb_func=lambda inputs: inputs + noise, n_perturb_samples=K, target=t)
        return out

    def ours():
        return sensitivity_max_layers(x, t, _engine_attribute(s), generators=gens(), n_perturb_samples=K,
                                      radius=radius, batch_size=args.attribution_batch)

    lib_s, lib = timed(library)
    eng_s, eng = timed(ours)
    gap = max(float((eng[l] - lib[l].double()).abs().max()) for l in s["layers"])
    label = "LayerDeepLiftShap" if s["method"] == "deepliftshap" else "LayerGradCam"
    print(f"sensitivity ({s['method']}, K={K}): engine {eng_s:7.2f} s   captum sensitivity_max around {label} "
          f"per layer {lib_s:7.2f} s   ratio {lib_s / eng_s:5.1f}x   max |difference| {gap:.1e}")


@bench("coherency")
def bench_coherency(s, args):
    from layersweep.metrics.adcc import coherency_from_maps, coherency_scores
    from layersweep.metrics import explanation_images, normalize_maps

    x, t, layers = s["x"], s["t"], s["layers"]
    n, H, W = len(x), x.shape[-2], x.shape[-1]
    raw = _engine_attribute(s)(x, t)
    maps01 = torch.cat([normalize_maps(raw[l], (H, W))[0] for l in layers])  # layer-major rows
    ci = torch.arange(n).repeat(len(layers))
    map_layers = torch.tensor(layers).repeat_interleave(n)

    def library():  # per layer: the library's map of that layer on the layer's explanation images
        out = []
        for j, layer in enumerate(layers):
            S = maps01[j * n:(j + 1) * n]
            b = _captum_layer_method(s, layer)(explanation_images(x, S), t)
            b = torch.nn.functional.interpolate(b[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            out.append(coherency_from_maps(S, b))
        return torch.cat(out)

    def ours():
        return coherency_scores(x, t, maps01, _engine_attribute(s), map_layers=map_layers, crop_index=ci,
                                batch_size=args.attribution_batch)

    lib_s, lib = timed(library)
    eng_s, eng = timed(ours)
    print(f"coherency ({s['method']}, {len(maps01)} maps): engine {eng_s:7.2f} s   captum per layer {lib_s:7.2f} s   "
          f"ratio {lib_s / eng_s:5.2f}x   max |difference| {float((eng - lib).abs().max()):.1e}")


class Clock:
    """Wall and process-CPU seconds, the minimum over `repeat` calls (the least disturbed run)."""

    repeat = 1

    def __init__(self, wall=float("inf"), cpu=float("inf")):
        self.wall, self.cpu = wall, cpu

    def __truediv__(self, other):
        return Clock(self.wall / other.wall, self.cpu / other.cpu)


def timed_min(fn):
    wall, cpu, out = best_of(fn, Clock.repeat)
    return Clock(wall, cpu), out


def timed_rounds(arms: dict):
    """{name: (Clock, output)} of each arm, the arms run in turn `repeat` times (a load that comes and goes hits
    every arm alike), the minimum kept per arm."""
    best = {k: Clock() for k in arms}
    outs = {}
    for _ in range(Clock.repeat):
        for k, fn in arms.items():
            w0, c0 = time.perf_counter(), time.process_time()
            outs[k] = fn()
            best[k] = Clock(min(best[k].wall, time.perf_counter() - w0), min(best[k].cpu, time.process_time() - c0))
    return {k: (best[k], outs[k]) for k in arms}


def _report(name, ours, rows, n_maps, diff):
    print(f"{name}: {'layersweep':42s} {ours.wall:7.2f} s wall ({ours.wall / n_maps:.3f} s/map), {ours.cpu:7.2f} s CPU")
    for label, sec in rows:
        r = sec / ours
        print(f"{name}: {label:42s} {sec.wall:7.2f} s wall ({sec.wall / n_maps:.3f} s/map), {sec.cpu:7.2f} s CPU"
              f"   ratio {r.wall:5.1f}x wall, {r.cpu:5.1f}x CPU")
    print(f"{name}: largest |layersweep - library| = {diff:.2e}")


def _gradcampp_maps(s):
    """The engine's Grad-CAM++ maps of s's crops at s's layers, upsampled and min-max normalised as the pipeline
    does, constant ones left out: (maps01, crop index, layer of each map), computed once for road and infidelity."""
    if "maps01" not in s:
        from layersweep.attribution import attribute_layers
        from layersweep.metrics import normalize_maps

        x, n = s["x"], len(s["x"])
        raw = attribute_layers(s["model"], x, s["t"], ["gradcampp"], s["layers"])["gradcampp"]
        normed = [normalize_maps(raw[l], tuple(x.shape[-2:])) for l in s["layers"]]  # layer-major rows
        maps01, constant = torch.cat([m for m, _ in normed]), torch.cat([c for _, c in normed])
        s["maps01"] = maps01[~constant]
        s["ci"] = torch.arange(n).repeat(len(s["layers"]))[~constant]
        s["layer_of"] = torch.tensor(s["layers"]).repeat_interleave(n)[~constant]
    return s["maps01"], s["ci"], s["layer_of"]


@bench("road")
def bench_road(s, args):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from layersweep.metrics.road import noisy_linear_impute, road_keep_masks, road_scores
    from layersweep.metrics import image_scores

    model, x, t = s["model"], s["x"], s["t"]
    maps01, ci, layer_of = _gradcampp_maps(s)
    M, n, P = len(maps01), len(x), [20, 40, 60, 80]
    seeds = [1000 + m for m in range(M)]

    def ours(solver):
        Y = image_scores(model, x, t, batch_size=args.batch_size)
        gens = [torch.Generator().manual_seed(sd) for sd in seeds]
        return road_scores(model, x, maps01, t, crop_index=ci, Y=Y, percentiles=P, noise=0.01, generators=gens,
                           solver=solver, batch_size=args.batch_size)

    def per_layer():
        for layer in s["layers"]:
            sel = torch.nonzero(layer_of == layer)[:, 0]
            torch.manual_seed(layer)
            ROADCombined(percentiles=P)(x[ci[sel]], maps01[sel].numpy(),
                                        [ClassifierOutputSoftmaxTarget(int(c)) for c in t[ci[sel]]], model)

    def per_map():  # each map's RNG seeded as its generator in ours(): the same noise, comparable values
        out = np.zeros(M)
        for m in range(M):
            c = int(ci[m])
            torch.manual_seed(seeds[m])
            out[m] = ROADCombined(percentiles=P)(x[c:c + 1], maps01[m:m + 1].numpy(),
                                                 [ClassifierOutputSoftmaxTarget(int(t[c]))], model)[0]
        return out

    runs = timed_rounds({"ours": lambda: ours("direct"), "layer": per_layer, "map": per_map})
    (t_ours, res), (t_layer, _), (t_map, ref) = runs["ours"], runs["layer"], runs["map"]
    print(f"road ({M} Grad-CAM++ maps, percentiles {P}, noise 0.01, solver direct):")
    _report("road", t_ours, [("pytorch-grad-cam ROADCombined per layer", t_layer),
                             ("pytorch-grad-cam ROADCombined per map", t_map)], M,
            float(np.abs(res["road_combined"].numpy() - ref).max()))
    if args.with_cg:
        t_cg, res_cg = timed_min(lambda: ours("cg"))
        print(f"road: layersweep, solver cg (the GPU path) on this device {t_cg.wall:7.2f} s wall "
              f"({t_cg.wall / M:.3f} s/map), largest |cg - direct| = "
              f"{float((res_cg['road_combined'] - res['road_combined']).abs().max()):.1e}")

    # where the time goes: the imputations alone, and the forwards each way needs
    keep = road_keep_masks(maps01, P).view(-1, *x.shape[-2:])
    imgs = x[ci.repeat_interleave(2 * len(P))]
    t_imp_lib, _ = timed_min(lambda: [NoisyLinearImputer(noise=0.0)(imgs[i], keep[i].float()) for i in range(len(keep))])
    t_imp, _ = timed_min(lambda: noisy_linear_impute(imgs, keep, noise=0.0, solver="direct"))
    print(f"road: imputations of {len(keep)} masks: pytorch-grad-cam {t_imp_lib.wall:.2f} s, layersweep (direct) "
          f"{t_imp.wall:.2f} s ({(t_imp_lib / t_imp).wall:.1f}x), i.e. {t_imp.wall / M:.3f} s/map")

    def per_image(b):  # seconds of one forward per image at batch size b (VGG's classifier costs per call)
        probe = x[torch.arange(b) % n]
        with torch.no_grad():
            return timed_min(lambda: model(probe))[0].wall / b

    b_ours = min(args.batch_size, 2 * len(P) * M)
    f_map, f_layer, f_ours = per_image(1), per_image(n), per_image(b_ours)
    print(f"road: forwards per map: pytorch-grad-cam {4 * len(P)} (it rescores the input with every imputation) "
          f"at batch 1 (per map) or {n} (per layer), layersweep {2 * len(P)} at batch {b_ours}: "
          f"{4 * len(P) * f_map:.3f} / {4 * len(P) * f_layer:.3f} s/map against {2 * len(P) * f_ours:.3f} s/map")


@bench("infidelity")
def bench_infidelity(s, args):
    from captum.metrics import infidelity

    from layersweep.metrics.infidelity import gaussian_perturbations, infidelity_scores

    model, x, t = s["model"], s["x"], s["t"]
    maps01, ci, layer_of = _gradcampp_maps(s)
    M, K, std = len(maps01), args.samples, 0.003

    def pert(i):  # a fresh generator per call: the same draws for both
        return gaussian_perturbations(x[i], K, std, torch.Generator().manual_seed(2000 + i))

    def ours():
        return infidelity_scores(model, x, maps01, t, perturbations=pert, crop_index=ci, normalize=True,
                                 batch_size=args.batch_size)["infidelity"]

    def per_layer():
        out = torch.empty(M, dtype=torch.float64)
        for layer in s["layers"]:
            sel = torch.nonzero(layer_of == layer)[:, 0]
            noise = torch.cat([pert(int(c)) for c in ci[sel]])
            out[sel] = infidelity(model, lambda inp, noise=noise: (noise, inp - noise), x[ci[sel]],
                                  maps01[sel][:, None].expand(-1, 3, -1, -1), target=t[ci[sel]],
                                  n_perturb_samples=K, normalize=True).double()
        return out

    def per_map():
        for m in range(M):
            c = int(ci[m])
            noise = pert(c)
            infidelity(model, lambda inp, noise=noise: (noise, inp - noise), x[c:c + 1],
                       maps01[m:m + 1, None].expand(-1, 3, -1, -1), target=t[c:c + 1], n_perturb_samples=K,
                       normalize=True)

    runs = timed_rounds({"ours": ours, "layer": per_layer, "map": per_map})
    (t_ours, res), (t_layer, ref), (t_map, _) = runs["ours"], runs["layer"], runs["map"]
    print(f"infidelity ({M} Grad-CAM++ maps, K={K}, std {std}, normalize; K + 1 forwards per crop here, per crop "
          f"and layer in captum; the difference below is relative, float32 forwards):")
    _report("infidelity", t_ours, [("captum infidelity per layer", t_layer), ("captum infidelity per map", t_map)],
            M, float(((res - ref).abs() / ref.abs()).max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=None, help="metrics to run (default: all)")
    ap.add_argument("--size", type=int, default=64, help="input side in pixels")
    ap.add_argument("--crops", type=int, default=2)
    ap.add_argument("--baselines", type=int, default=4, help="DeepLiftShap baselines (not = crops: captum would "
                                                             "take them for per-crop baselines)")
    ap.add_argument("--samples", type=int, default=10, help="sensitivity: perturbations per crop (captum's default)")
    ap.add_argument("--layers", type=int, nargs="+", default=list(range(21)))
    ap.add_argument("--method", choices=("deepliftshap", "gradcam"), default="deepliftshap")
    ap.add_argument("--attribution-batch", type=int, default=16, help="images per engine call")
    ap.add_argument("--max-pairs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="road, infidelity: images per scoring forward")
    ap.add_argument("--repeat", type=int, default=2, help="road, infidelity: rounds of timings, the minimum kept")
    ap.add_argument("--with-cg", action="store_true", help="road: also time the cg solver (meant for a GPU)")
    args = ap.parse_args(argv)
    Clock.repeat = args.repeat
    if args.baselines == args.crops:
        ap.error("--baselines must differ from --crops (captum's sensitivity_max expands per-crop baselines)")
    warnings.simplefilter("ignore")  # captum warns on every call that it sets hooks
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20).eval()
    s = dict(model=model, ref=library_copy(model), method=args.method, layers=args.layers,
             max_pairs=args.max_pairs, x=torch.randn(args.crops, 3, args.size, args.size),
             t=torch.arange(args.crops) % 20, baselines=torch.randn(args.baselines, 3, args.size, args.size))
    print(f"VGG11 (random, 20 classes), {args.size}x{args.size}, {args.crops} crops, {args.baselines} baselines, "
          f"layers {args.layers[0]}..{args.layers[-1]} ({len(args.layers)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name, fn in BENCHES.items():
        if args.only is None or name in args.only:
            fn(s, args)


if __name__ == "__main__":
    main()
