"""What the Snakemake rules need to know about a config from the torch side, cached so that parsing the
workflow does not import torch.

Building the DAG needs a few facts that live in torch-importing modules: the registered methods and metrics
(names, options, columns), the layers (sites) of `model.arch` (to check each method's layers), whether the jobs of
`device: auto` will find CUDA, and the cost model's memory and time requests. Importing torch and torchvision
takes 5-15 s on a loaded machine, and under SLURM every job parses the workflow again. So `workflow_facts`
computes them once per (config, layersweep source, torch version, GPU device files) and keeps them in a small pickle in
the working directory's `.snakemake/`; a later parse with the same key reads the pickle and imports nothing
heavy. Any change to a file of the `layersweep` package, to the config, to the installed torch or
torchvision, to the machine's NVIDIA device files or to the CUDA-related environment gives a new key, so a cached fact is never stale. A config
that fails a check is never cached: each parse re-raises its one sentence.

This module itself imports only the standard library.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import LayersweepError

CACHE_DIR = Path(".snakemake") / "layersweep-facts"
FACTS_VERSION = 5  # bump when the facts' layout changes
# what decides `device: auto` besides the machine (layersweep.device.cuda_for_jobs reads the first)
CUDA_ENV_KEYS = ("LAYERSWEEP_CUDA", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class MetricFacts:
    """The parts of a registered metric (layersweep.metrics.registry.Metric) that the rules read."""
    name: str
    columns: dict   # column -> "higher" | "lower" | "none"
    needs: tuple    # "forwards", "attribution", "boxes"
    rescaled: tuple  # the columns also scored on the rescaled maps


@dataclass(frozen=True)
class WorkflowFacts:
    methods: list                  # attribution.methods, checked against the registry
    method_options: dict           # {method: its options, defaults filled} of methods run or given options
    compute: list                  # the metrics to compute: core first, then metrics.compute's others
    metric_options: dict           # {metric: its checked options}
    metrics: dict                  # {metric: MetricFacts} of `compute`
    checkpoint_key: str            # the model.checkpoints entry of model.arch / model.source
    head_training: bool            # False for a source that brings its own classifier
    gpu: int                       # the `gpu` resource of the device rules
    attribution_mem_mb: dict       # {method: MB of one attribution job, first attempt}
    attribution_runtime_min: dict  # {method: SLURM minutes of one shard, first attempt}
    metric_runtime_min: dict       # {(metric, method): SLURM minutes of one metric shard, first attempt}


def _package_fingerprint() -> str:
    """Path, size and modification time of every .py file of the layersweep package in use."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        digest.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def _versions() -> str:
    out = [sys.version]
    for dist in ("torch", "torchvision"):
        try:
            out.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist}=absent")
    return ";".join(out)


def _gpu_device_files() -> str:
    """The NVIDIA device files of this machine: what decides whether torch finds CUDA here, for a given torch
    build. In the key instead of the host name, so that the nodes of a cluster share one cache entry."""
    return ",".join(sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")))


def facts_key(config: dict, environ=None) -> str:
    environ = os.environ if environ is None else environ
    env = ";".join(f"{k}={environ.get(k, '')}" for k in CUDA_ENV_KEYS)
    parts = [str(FACTS_VERSION), repr(_sorted(config)), _package_fingerprint(), _versions(), env,
             _gpu_device_files()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def workflow_facts(config: dict, cache_dir: Path | str = CACHE_DIR, environ=None) -> WorkflowFacts:
    """The facts of `config` (validated, defaults filled), from the cache or computed (importing torch) and
    cached. Raises LayersweepError with one sentence for a config the registries or the model refuse."""
    path = Path(cache_dir) / f"{facts_key(config, environ)}.pickle"
    try:
        with open(path, "rb") as fh:
            facts = pickle.load(fh)
        if isinstance(facts, WorkflowFacts):
            return facts
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError):
        pass  # absent or unreadable: compute it again
    facts = compute_facts(config, environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: jobs parsing at once under SLURM never read half a file
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as fh:
            pickle.dump(facts, fh)
        os.replace(fh.name, path)
    except OSError:
        pass  # a read-only working directory: parse without the cache
    return facts


def compute_facts(config: dict, environ=None) -> WorkflowFacts:
    """The checks the rules make before anything runs, and the facts they read, from the torch-side modules."""
    from .attribution import available_methods
    from .attribution.registry import method_options as resolve_method_options
    from .config import check_method_layers
    from .device import gpu_request
    from .metrics.registry import check_compute, configured_options, get_metric
    from .attribution.sites import arch_site_table
    from .model import check_arch, check_input_size, checkpoint_key, needs_head_training
    from .sizing import attribution_memory_mb, attribution_runtime_min, metric_runtime_min

    data, model, attribution, metrics = config["data"], config["model"], config["attribution"], config["metrics"]
    known = available_methods()
    unknown = [m for m in attribution["methods"] if m not in known]
    if unknown:
        raise LayersweepError(f"config key 'attribution.methods' names the unknown method '{unknown[0]}'; "
                              f"known methods: {', '.join(sorted(known))}.")
    methods = list(attribution["methods"])
    unknown = sorted(set(attribution["options"]) - set(known))
    if unknown:
        raise LayersweepError(f"config key 'attribution.options.{unknown[0]}' names no known method.")
    method_options = {m: resolve_method_options(m, attribution["options"].get(m))
                      for m in sorted(set(methods) | set(attribution["options"]))}

    compute = check_compute(metrics["compute"], metrics["options"], data["samples"], methods,
                            masks=data.get("source") == "shapes")
    metric_options = {m: configured_options(m, metrics) for m in compute}

    check_arch(model["arch"], model["source"])
    check_input_size(model["arch"], data["crop_size"])  # a ViT takes one input size only
    sites = arch_site_table(model["arch"], model["source"])  # the sites of model.arch (meta device: no weights)
    sites.resolve(attribution["layers"])
    sites.resolve(config["figures"]["fig3_layers"], key="figures.fig3_layers")
    sites.resolve([config["figures"].get("fig2_layer", 18)], key="figures.fig2_layer")
    # each method's own layers (or attribution.layers), also of a method not run that lists its own
    for method in methods + sorted(m for m, o in attribution["options"].items() if "layers" in o and m not in methods):
        check_method_layers(attribution, method, sites)
    key = checkpoint_key(model["arch"], model["source"])
    if model["init"] == "imagenet" and not model.get("weights") and key not in model["checkpoints"]:
        raise LayersweepError(f"config key 'model.checkpoints' has no entry '{key}' (file, sha256_prefix, mirrors) "
                              f"for model.arch '{model['arch']}'; add it or set model.weights to a local copy.")

    registered = {m: get_metric(m) for m in compute}
    shard = data["shard_size"]
    return WorkflowFacts(
        methods=methods,
        method_options=method_options,
        compute=compute,
        metric_options=metric_options,
        metrics={m: MetricFacts(m, dict(r.columns), tuple(r.needs), tuple(r.rescaled)) for m, r in registered.items()},
        checkpoint_key=key,
        head_training=needs_head_training(model["source"]),
        gpu=gpu_request(config["device"], environ),
        # the cost rule and fig2 size themselves as a DeepLiftShap job
        attribution_mem_mb={m: attribution_memory_mb(m, config) for m in dict.fromkeys([*methods, "deepliftshap"])},
        attribution_runtime_min={m: attribution_runtime_min(m, config, shard) for m in methods},
        metric_runtime_min={(x, m): metric_runtime_min(x, metric_options[x], m, config, shard)
                            for x in compute for m in methods},
    )
