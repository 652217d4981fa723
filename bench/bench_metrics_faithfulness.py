"""Faithfulness metrics that recompute or perturb: the batched metric against the library called per layer (or
per map), in one process, on the same inputs and the same seeded perturbations; prints seconds and ratios.

One function per metric (`@bench("name")`), selected with --only:
- sensitivity: `sensitivity_max_layers` around the engine (every layer per perturbed batch) vs captum's
  `sensitivity_max` around `LayerDeepLiftShap(model, features[l])` (or `LayerGradCam`) called once per layer.
  Issue 11's target: >= 10x.
- coherency: ADCC's coherency of every (crop, layer) map, explanation images batched across crops and layers
  through the engine vs captum's `LayerDeepLiftShap` on each layer's explanation images (one call per layer).

Random VGG11 (20 classes); the reference libraries run on a copy with ReLU(inplace=False).

    python bench/bench_metrics_faithfulness.py [--only sensitivity coherency] [--size 64] [--crops 2]
           [--baselines 4] [--samples 10] [--layers 0 1 ... 20] [--method deepliftshap|gradcam] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torchvision

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


def _reference_model(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return ref


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
    from layersweep.metrics.scoring import explanation_images, normalize_maps

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
    args = ap.parse_args(argv)
    if args.baselines == args.crops:
        ap.error("--baselines must differ from --crops (captum's sensitivity_max expands per-crop baselines)")
    warnings.simplefilter("ignore")  # captum warns on every call that it sets hooks
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20).eval()
    s = dict(model=model, ref=_reference_model(model), method=args.method, layers=args.layers,
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
