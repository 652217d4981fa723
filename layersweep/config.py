"""Config checks that Snakemake's schema validation leaves to us: one sentence per problem."""
from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import yaml

from .errors import LayersweepError


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def check_config(config: dict, schema_path: str | Path) -> None:
    """Validate against the JSON schema; the first error becomes one sentence naming the key."""
    if isinstance(config.get("attribution"), dict) and "bf16_autocast" in config["attribution"]:
        raise LayersweepError("config key 'attribution.bf16_autocast' was removed: set 'attribution.precision: bf16' "
                              "(or float16 / float32) instead, which now also applies on the CPU.")
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        pass
    elif error.validator == "additionalProperties":
        raise LayersweepError(f"config section '{_key(error.absolute_path)}' has an unknown key: {error.message}.")
    else:
        raise LayersweepError(f"config key '{_key(error.absolute_path)}' is invalid: {error.message}.")
    from .archs import ARCH_NAMES  # torch-free: this runs when Snakemake parses the workflow
    arch = config.get("model", {}).get("arch", "vgg11")
    if arch not in ARCH_NAMES:
        raise LayersweepError(f"config key 'model.arch' is invalid: {arch!r} is not one of {', '.join(ARCH_NAMES)} "
                              "(docs/architectures.md).")
    data = config["data"]
    if data.get("synthetic") and not data.get("voc_root"):
        raise LayersweepError("config key 'data.synthetic' needs 'data.voc_root' to say where the synthetic VOC is written.")
    check_data_model(data, config["model"])


def check_data_model(data: dict, model: dict) -> None:
    """The data source, the explained class and the model must fit: ImageNet labels are classes of a 1,000-class
    model, VOC labels of a 20-class one."""
    source, model_source = data.get("source", "voc"), model.get("source", "torchvision")
    if source == "imagenet":
        if model_source != "torchvision_imagenet":
            raise LayersweepError(f"config key 'data.source' is imagenet but 'model.source' is {model_source}, a VOC "
                                  "model; set model.source to torchvision_imagenet (the 1,000-class ImageNet model).")
        if data.get("samples", "crops") != "images":
            raise LayersweepError("config key 'data.source' is imagenet, whose samples are whole images; set "
                                  "'data.samples: images'.")
    elif model_source == "torchvision_imagenet" and data.get("target", "label") == "label":
        raise LayersweepError("config key 'model.source' is torchvision_imagenet (1,000 ImageNet classes) but the VOC "
                              "labels are 20 VOC classes; set 'data.target: top1' to explain the model's prediction.")


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their text, so a config file
    that lists the same keys in another order must not look like a change."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def n_shards(n_images: int, shard_size: int) -> int:
    return math.ceil(n_images / shard_size)


def shard_range(k: int, n_images: int, shard_size: int) -> tuple[int, int]:
    """Positions [start, stop) of shard k in the seeded evaluation order."""
    return k * shard_size, min((k + 1) * shard_size, n_images)


def r_label(r: float) -> str:
    """The file-name form of a rescale factor: 0.3 -> '0.3'."""
    return f"{float(r):g}"


def figure_methods(config: dict) -> list[str]:
    """figures.methods: the methods fig5/fig6 draw (all configured ones by default), in config order."""
    configured = list(config["attribution"]["methods"])
    chosen = config["figures"].get("methods", "all")
    if chosen == "all":
        return configured
    for method in chosen:
        if method not in configured:
            raise LayersweepError(f"config key 'figures.methods' names '{method}', which is not in "
                                  f"'attribution.methods' ({', '.join(configured)}).")
    return list(chosen)


def compare_pair(config: dict) -> tuple[str, str] | None:
    """figures.compare: the two methods of fig7 and the paired differences (first minus second); None when the
    key is null (no fig7, e.g. a study of one method)."""
    configured = list(config["attribution"]["methods"])
    pair = config["figures"].get("compare", ["gradcampp", "deepliftshap"])
    if pair is None:
        return None
    pair = tuple(pair)
    for method in pair:
        if method not in configured:
            raise LayersweepError(f"config key 'figures.compare' names '{method}', which is not in "
                                  f"'attribution.methods' ({', '.join(configured)}); fig7 compares two "
                                  "configured methods.")
    return pair


def method_layers_key(attribution: dict, method: str) -> tuple[str, object]:
    """(config key, value) of the layers `method` runs at: `attribution.options.<method>.layers` if given, else
    `attribution.layers`."""
    own = (attribution.get("options") or {}).get(method) or {}
    if "layers" in own:
        return f"attribution.options.{method}.layers", own["layers"]
    return "attribution.layers", attribution["layers"]


def check_method_layers(attribution: dict, method: str, table) -> list[int]:
    """The site indices `method` runs at, for model.arch's site table (`attribution.sites.arch_site_table`),
    before anything runs: each site must exist in the arch, and be one the method is defined at
    (`layer_kinds` of its registry entry, e.g. FullGrad's conv layers). Otherwise one sentence naming the
    config key and the value."""
    from .attribution.engine import unsupported_site
    from .attribution.registry import get_method

    key, value = method_layers_key(attribution, method)
    layers = table.resolve(value, key=key)
    m = get_method(method)
    bad = unsupported_site(m, table.graph, table, layers, attribution.get("attribute_to", "output"))
    if bad is not None:
        layer, tensor = bad
        where = (f"list only such layers in '{key}'" if key != "attribution.layers"
                 else f"give it its own list in 'attribution.options.{method}.layers'")
        raise LayersweepError(f"config key '{key}' names layer {layer} ({tensor}) for method '{method}', which is "
                              f"defined only at layers of kind {' or '.join(m.layer_kinds)}; {where}.")
    return layers
