"""Public entry points: every requested layer of a batch in one shared pass per method family."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..errors import LayersweepError
from ..precision import amp_dtype as precision_dtype
from .network import NONLINEAR, build_ops, num_classes
from .passes import deeplift_pass, gradient_pass
from .perturb import deeplift0_pass, perturb_pass
from .registry import get_method, method_options

ATTRIBUTE_TO = ("output", "input")


def _check_methods(methods) -> list:
    if isinstance(methods, str):
        methods = [methods]
    methods = list(dict.fromkeys(methods))  # de-duplicate, keep order
    if not methods:
        raise LayersweepError("the list of attribution methods is empty; name at least one method.")
    return [get_method(name) for name in methods]


def _check_layers(layers, n_features: int) -> list[int]:
    if isinstance(layers, (int, np.integer)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise LayersweepError(f"layers must be a list of indices into model.features, not {layers!r}.")
    out = []
    for layer in layers:
        if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer)):
            raise LayersweepError(f"layer {layer!r} is not an integer index into model.features (-1 = the model input).")
        if not -1 <= int(layer) < n_features:
            raise LayersweepError(f"layer {int(layer)} is outside -1..{n_features - 1} (model.features has {n_features} modules; -1 is the model input).")
        out.append(int(layer))
    if not out:
        raise LayersweepError("the list of layers is empty; name at least one index into model.features.")
    return sorted(set(out))


def unsupported_layer(method, layers, ops, attribute_to: str = "output"):
    """The first of `layers` whose tensor is of a kind `method` is not defined at (FullGrad: conv biases), as
    (layer, words for its tensor), or None. `ops[i]` is model.features[i] (anything with .name and .kind)."""
    if method.layer_kinds is None:
        return None
    for layer in layers:
        p = layer if (attribute_to == "output" or layer == -1) else layer - 1  # the tensor the map lies on
        kind = "input" if p == -1 else ops[p].kind
        if kind not in method.layer_kinds:
            tensor = "the model input" if p == -1 else f"{ops[p].name}, a {kind}"
            if p != layer:
                tensor = f"the input of layer {layer}, i.e. {tensor}"
            return layer, tensor
    return None


def _check_layer_kinds(methods, layers: list[int], ops, attribute_to: str) -> None:
    """A method defined only at some op kinds (FullGrad: conv biases) refuses the other layers up front."""
    for m in methods:
        bad = unsupported_layer(m, layers, ops, attribute_to)
        if bad is not None:
            layer, tensor = bad
            raise LayersweepError(f"method {m.name!r} is defined only at layers of kind {' or '.join(m.layer_kinds)}, "
                                  f"but layer {layer} is {tensor}; remove the layer from 'attribution.layers' "
                                  f"or the method from 'attribution.methods'.")


def _check_tensors(model, images, targets, baselines, need_baselines, n_classes):
    if not torch.is_tensor(images) or images.ndim != 4 or not images.is_floating_point():
        raise LayersweepError(f"images must be a float tensor (B, C, H, W), not {type(images).__name__} {tuple(getattr(images, 'shape', ()))}.")
    params = list(model.parameters())
    if params and params[0].device != images.device:
        raise LayersweepError(f"the model is on {params[0].device} but the images are on {images.device}; move both to the same device.")
    targets = torch.as_tensor(targets)
    if targets.shape != (images.shape[0],) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise LayersweepError(f"targets must be integer class indices of shape ({images.shape[0]},), not {targets.dtype} {tuple(targets.shape)}.")
    if targets.device.type == "cpu":  # checked before moving: an out-of-range index is a device assert on CUDA
        bad = targets[(targets < 0) | (targets >= n_classes)]
        if bad.numel():
            raise LayersweepError(f"target class {int(bad[0])} is outside 0..{n_classes - 1} (the model has {n_classes} classes).")
    targets = targets.to(images.device, torch.int64)
    if need_baselines:
        if baselines is None:
            raise LayersweepError("the DeepLift-family methods need `baselines` (K, C, H, W); none were given.")
        if not torch.is_tensor(baselines) or baselines.ndim != 4 or baselines.shape[1:] != images.shape[1:] or baselines.shape[0] < 1:
            shape = ", ".join(map(str, images.shape[1:]))
            raise LayersweepError(f"baselines must be a tensor (K, {shape}) with K >= 1, "
                                  f"not {tuple(getattr(baselines, 'shape', ()))}.")
        baselines = baselines.to(images.device, images.dtype)
    return targets, baselines


def _check_count(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LayersweepError(f"{key.split('.')[-1]} is {value!r}; it must be an integer >= 1 (config key '{key}').")
    return int(value)


def _mixed_methods(methods, opts: dict, options: dict):
    """The engine's hook for mix methods (pass "mix", RefineCAM): each is replaced by its base method (option
    `base`, with the base's own options if given), run in the base's pass. Returns (methods to run, {mix
    method: its Method}); `opts` gains the bases' options."""
    mixed = {m.name: m for m in methods if m.pass_kind == "mix"}
    run = [m for m in methods if m.pass_kind != "mix"]
    for m in mixed.values():
        base = get_method(opts[m.name]["base"])
        if base.name not in opts:
            opts[base.name] = method_options(base.name, options.get(base.name))
        if all(r.name != base.name for r in run):
            run.append(base)
    return run, mixed


def _mix_maps(mixed: dict, results: dict, weights: dict, requested: list, size, opts: dict):
    """The maps of each mix method from its base's: every layer's base maps, ordered deep -> shallow (the model
    input, -1, last), go to the method's fn, which returns input-sized maps per layer. Bases that were not
    requested themselves are dropped."""
    for name, m in mixed.items():
        base_maps = results[opts[name]["base"]]
        # deep -> shallow: integer VGG indices sort by depth (-1, the input, last); with named graph sites, order
        # them by their position in the graph instead
        ordered = [(layer, base_maps[layer]) for layer in sorted(base_maps, reverse=True)]
        mix = m.fn(ordered, size=size, **opts[name])
        results[name] = {layer: mix[layer][0].contiguous() for layer in sorted(mix)}
    keep = lambda d: {k: v for k, v in d.items() if k in requested}  # noqa: E731
    results, weights = keep(results), keep(weights)
    return {name: results[name] for name in requested}, weights


def _attribute(model, images, targets, methods, layers, *, baselines=None, attribute_to="output",
               max_pairs=64, precision="float32", options=None, seed=0, crop_ids=None, perturb_batch=64,
               return_weights=False):
    """attribute_layers plus the target logits (B, n_classes) of the forward it ran (and the weights)."""
    if attribute_to not in ATTRIBUTE_TO:
        raise LayersweepError(f"attribute_to is {attribute_to!r}; use 'output' or 'input' (config key 'attribution.attribute_to').")
    max_pairs = _check_count(max_pairs, "attribution.max_pairs")
    perturb_batch = _check_count(perturb_batch, "attribution.perturb_batch")
    ops, n_features = build_ops(model)
    n_classes = num_classes(ops)
    methods = _check_methods(methods)
    layers = _check_layers(layers, n_features)
    _check_layer_kinds(methods, layers, ops, attribute_to)
    options = dict(options or {})
    unknown = sorted(set(options) - {m.name for m in methods})
    if unknown:
        raise LayersweepError(f"options are given for {unknown[0]!r}, which is not among the requested methods.")
    opts = {m.name: method_options(m.name, options.get(m.name)) for m in methods}
    requested = [m.name for m in methods]
    methods, mixed = _mixed_methods(methods, opts, options)
    _check_layer_kinds(methods, layers, ops, attribute_to)  # a mix's base
    if crop_ids is None:
        crop_ids = list(range(images.shape[0]))
    if len(crop_ids) != images.shape[0]:
        raise LayersweepError(f"{len(crop_ids)} crop ids for {images.shape[0]} images; give one id per image.")
    by_pass = {kind: {m.name: m.fn for m in methods if m.pass_kind == kind}
               for kind in ("gradient", "deeplift", "deeplift0", "perturb")}
    targets, baselines = _check_tensors(model, images, targets, baselines, bool(by_pass["deeplift"]), n_classes)
    amp = precision_dtype(precision, images.device, "attribution.precision")

    results = {m.name: {} for m in methods}
    weights = {m.name: {} for m in methods if m.weights}
    logits = None
    # the input of features[l] is the output of features[l-1] (for every pass but the DeepLift one)
    pos = {layer: layer if (attribute_to == "output" or layer == -1) else layer - 1 for layer in layers}

    def collect(kind, maps, pass_weights):
        for layer, p in pos.items():
            for name in by_pass[kind]:
                results[name][layer] = maps[p][name]
                if name in weights:
                    weights[name][layer] = pass_weights[p][name]

    if by_pass["gradient"]:
        gradient_methods = {m.name: m for m in methods if m.pass_kind == "gradient"}
        maps, logits, pass_weights = gradient_pass(ops, images, targets, set(pos.values()), gradient_methods,
                                                   amp_dtype=amp)
        collect("gradient", maps, pass_weights)
    if by_pass["deeplift0"]:
        maps, pass_weights, dl0_logits = deeplift0_pass(ops, n_features, images, targets, set(pos.values()),
                                                        by_pass["deeplift0"], n_classes=n_classes,
                                                        max_pairs=max_pairs, mm_dtype=amp)
        logits = dl0_logits if logits is None else logits
        collect("deeplift0", maps, pass_weights)
    if by_pass["perturb"]:
        perturb_methods = {m.name: m for m in methods if m.pass_kind == "perturb"}
        maps, pass_weights, p_logits = perturb_pass(ops, n_features, images, targets, set(pos.values()),
                                                    perturb_methods, options=opts, seed=seed, crop_ids=crop_ids,
                                                    perturb_batch=perturb_batch, mm_dtype=amp)
        logits = p_logits if logits is None else logits
        collect("perturb", maps, pass_weights)
    if by_pass["deeplift"]:
        site = {}
        for layer in layers:
            if attribute_to == "output" or layer == -1:
                site[layer] = ("out", layer)
            elif ops[layer].kind in NONLINEAR:  # captum's attribute_to_layer_input quirk, see passes.py
                site[layer] = ("in", layer)
            else:
                site[layer] = ("out", layer - 1)
        maps, dl_logits = deeplift_pass(ops, n_features, images, targets, baselines, set(site.values()),
                                        by_pass["deeplift"], max_pairs=int(max_pairs), n_classes=n_classes,
                                        amp_dtype=amp)
        logits = dl_logits if logits is None else logits
        for layer, s in site.items():
            for name in by_pass["deeplift"]:
                results[name][layer] = maps[s][name]
    out_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    seen = set()

    def own(t):  # two layers can name one tensor (input of features[0] and layer -1): never alias
        t = t.to(out_dtype).contiguous()
        t = t.clone() if id(t) in seen else t
        seen.add(id(t))
        return t

    results = {name: {layer: own(t) for layer, t in sorted(per.items())} for name, per in results.items()}
    weights = {name: {layer: own(t) for layer, t in sorted(per.items())} for name, per in weights.items()}
    results, weights = _mix_maps(mixed, results, weights, requested, tuple(images.shape[-2:]), opts)
    if return_weights:
        return results, logits.to(out_dtype), weights
    return results, logits.to(out_dtype)


def attribute_layers(model, images, targets, methods, layers, *, baselines=None, attribute_to="output",
                     max_pairs=64, precision="float32", options=None, seed=0, crop_ids=None, perturb_batch=64,
                     return_weights=False):
    """Attribution maps of every (method, layer) for a batch, all layers of a method family in one pass.

    Args:
        model: torchvision-VGG-shaped (`features` of Conv2d/ReLU/MaxPool2d, `avgpool`, `classifier`),
            on the images' device. Not modified: ReLUs are applied functionally and never in place,
            so a layer's activation is the module's true output even with `ReLU(inplace=True)`.
            Dropout is treated as the identity (eval semantics).
        images: normalised float tensor (B, 3, H, W).
        targets: integer class indices (B,); the explained score is the target LOGIT.
        methods: names from `available_methods()`, e.g. ["deepliftshap", "gradcampp"].
        layers: indices into `model.features` (0..n-1), and -1 for the model input.
        baselines: (K, 3, H, W) tensor, required by DeepLift-family methods (DeepLiftShap averages over it).
        attribute_to: "output" (map on the module's output) or "input" (on its input). For the CAM
            family the input of features[l] is the output of features[l-1]. For DeepLiftShap it follows
            captum's `attribute_to_layer_input=True`, which on a ReLU/MaxPool skips that layer's own rule.
        max_pairs: the DeepLift pass runs in chunks of at most this many (image, baseline) pairs, which
            bounds its peak memory; results do not depend on it.
        precision: "float32" (default, exact), "bf16" or "float16": the convolutions and matmuls of the pass
            run in that dtype (autocast) on CUDA and on the CPU; maps and logits come back in float32.
        options: {method: {option: value}} (config `attribution.options`); missing ones take the defaults.
        seed, crop_ids: the sampling methods seed each crop from (seed, crop id, method, layer group);
            crop_ids defaults to the row numbers 0..B-1.
        perturb_batch: rows per tail / full forward of the perturbation methods (bounds their memory).
        return_weights: also return {method: {layer: (B, C_l)}} channel weights of the methods that have them.

    Returns:
        {method: {layer: Tensor (B, H_l, W_l)}} on images.device, float32 (float64 for float64 images)
        (and the weights, with `return_weights`).
        `deepliftshap` equals captum's `LayerDeepLiftShap(model, features[l]).attribute(images, baselines,
        target=targets).sum(1)` (`DeepLiftShap` for layer -1); `gradcampp` equals pytorch-grad-cam's
        `GradCAMPlusPlus(model, [features[l]])` cam before `scale_cam_image` (after `np.maximum(cam, 0)`).
    """
    out = _attribute(model, images, targets, methods, layers, baselines=baselines, attribute_to=attribute_to,
                     max_pairs=max_pairs, precision=precision, options=options, seed=seed, crop_ids=crop_ids,
                     perturb_batch=perturb_batch, return_weights=return_weights)
    return (out[0], out[2]) if return_weights else out[0]


def attribute_crops(model, crops_uint8, targets, baselines_uint8, methods, layers, *, batch_size, max_pairs,
                    device, attribute_to="output", precision="float32", progress=True, preprocessing=None,
                    options=None, seed=0, crop_ids=None, perturb_batch=64, dtype="float32", return_weights=False):
    """Stage helper: attribution maps of uint8 crops, batch by batch, results back on the CPU.

    The crops go to the device once, as uint8, and are normalised there batch by batch; the results come
    back once, when the shard is done.

    Args:
        crops_uint8: np.uint8 (N, H, W, 3) RGB crops; preprocessed with `layersweep.preprocess.to_model_input`
            and `preprocessing` (the model's, `preprocessing_for(model.source)`; None = torchvision's).
        targets: (N,) integer classes. baselines_uint8: np.uint8 (K, H, W, 3) or None (CAM methods only).
        device: a torch.device or a name ("auto", "cpu", "cuda[:N]"); the model is moved there.
        batch_size: crops per shared forward/backward; the other arguments as in `attribute_layers`.
        crop_ids: (N,) stable ids (default 0..N-1): with `seed`, they seed the sampling methods per crop, so
            the values of a crop do not depend on the batch size or on the other crops.
        dtype: "float32" or "float64" (config `attribution.dtype`): the model and crops are cast to it.

    Returns:
        {"logit": float32 (N,) target logit, "prob": float32 (N,) softmax probability of the target,
         "maps": {method: {layer: float32 (N, H_l, W_l)}},
         "weights": {method: {layer: float32 (N, C_l)}} (channel-weighted methods, with `return_weights`)}.
    """
    from tqdm import tqdm

    from ..device import resolve_device
    from ..preprocess import TORCHVISION, to_model_input

    preprocessing = TORCHVISION if preprocessing is None else preprocessing
    crops = np.asarray(crops_uint8)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise LayersweepError(f"crops must be a uint8 array (N, H, W, 3), not {crops.dtype} {crops.shape}.")
    if crops.shape[0] == 0:
        raise LayersweepError("the array of crops to attribute is empty.")
    targets = np.asarray(targets)
    if targets.shape != (crops.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise LayersweepError(f"targets must be {crops.shape[0]} integer classes, not {targets.dtype} {targets.shape}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise LayersweepError(f"batch_size is {batch_size!r}; it must be an integer >= 1 (config key 'attribution.batch_size').")
    if dtype not in ("float32", "float64"):
        raise LayersweepError(f"dtype is {dtype!r}; use 'float32' or 'float64' (config key 'attribution.dtype').")
    torch_dtype = getattr(torch, dtype)
    if crop_ids is None:
        crop_ids = np.arange(crops.shape[0])
    crop_ids = list(np.asarray(crop_ids).tolist())
    if len(crop_ids) != crops.shape[0]:
        raise LayersweepError(f"{len(crop_ids)} crop ids for {crops.shape[0]} crops; give one id per crop.")
    if not isinstance(device, torch.device):
        device = resolve_device(str(device))
    model.to(device, torch_dtype)
    baselines = None
    if baselines_uint8 is not None:
        base = np.asarray(baselines_uint8)
        if base.dtype != np.uint8 or base.ndim != 4 or base.shape[1:] != crops.shape[1:]:
            raise LayersweepError(f"baselines must be a uint8 array (K, {', '.join(map(str, crops.shape[1:]))}), not {base.dtype} {base.shape}.")
        baselines = to_model_input(base, device, preprocessing).to(torch_dtype)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch of a shard has the crops' fixed size
    n = crops.shape[0]
    crops_dev = torch.from_numpy(np.ascontiguousarray(crops)).to(device)  # once per shard, as uint8
    all_targets = torch.as_tensor(targets, dtype=torch.int64)  # validated on the CPU, batch by batch
    # results stay on the device until the shard is done: no host round trip per batch
    logit = torch.empty(n, dtype=torch.float32, device=device)
    prob = torch.empty(n, dtype=torch.float32, device=device)
    maps: dict = {}
    weights: dict = {}
    for s in tqdm(range(0, n, batch_size), desc="attribution", unit="batch", disable=not progress):
        images = to_model_input(crops_dev[s:s + batch_size], device, preprocessing).to(torch_dtype)  # normalised on the device
        tgt = all_targets[s:s + batch_size]
        res, logits, res_w = _attribute(model, images, tgt, methods, layers, baselines=baselines,
                                        attribute_to=attribute_to, max_pairs=max_pairs, precision=precision,
                                        options=options, seed=seed, crop_ids=crop_ids[s:s + batch_size],
                                        perturb_batch=perturb_batch, return_weights=True)
        tgt = tgt.to(logits.device, non_blocking=True)
        logit[s:s + len(tgt)] = logits.gather(1, tgt[:, None])[:, 0].float()
        prob[s:s + len(tgt)] = torch.softmax(logits.float(), dim=1).gather(1, tgt[:, None])[:, 0]
        for name, per_layer in res.items():
            dest = maps.setdefault(name, {})
            for layer, t in per_layer.items():
                if layer not in dest:
                    dest[layer] = torch.empty((n,) + tuple(t.shape[1:]), dtype=torch.float32, device=device)
                dest[layer][s:s + t.shape[0]] = t
        for name, per_layer in (res_w.items() if return_weights else ()):
            dest = weights.setdefault(name, {})
            for layer, t in per_layer.items():
                if layer not in dest:
                    dest[layer] = torch.empty((n,) + tuple(t.shape[1:]), dtype=torch.float32, device=device)
                dest[layer][s:s + t.shape[0]] = t
    maps = {name: {layer: t.cpu().numpy() for layer, t in per.items()} for name, per in maps.items()}
    weights = {name: {layer: t.cpu().numpy() for layer, t in per.items()} for name, per in weights.items()}
    logit, prob = logit.cpu().numpy(), prob.cpu().numpy()
    return {"logit": logit, "prob": prob, "maps": maps, "weights": weights}
