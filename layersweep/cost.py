"""What an attribution study will cost, before it runs: the network's facts, the seconds of a forward, a
backward and an SVD, and the cost table of the `cost` rule (results/cost.tsv).

The work itself (full-network equivalents per crop, `Work`, and what each method does per layer) is counted
by layersweep.attribution.work; this module reads the facts it needs from the model and turns work into time.

- `network_facts(model, crop_size, layers)` reads the site facts from the model's traced graph by shape
  propagation on the meta device (no weights, no compute): C, H x W, MACs and tail share of every site
  (the tail of a site is the graph nodes computed from it), its layer group (perturb.layer_groups: a node and
  the ReLU / MaxPool that are the only consumers after it), and which configured sites reuse the
  perturbations of an earlier configured site of their group.
- `method_cost` adds up one method's work over its configured layers: its pass (`work.pass_work`) plus its
  per-layer work (`work.method_layer_cost`); `metric_work` the work of a metric on one method's maps.
- `measure_seconds` times a few forwards and backwards of the model on the device, per crop, at the crop
  size; `measure_svd_seconds` times one SVD of each (H*W, C) shape as the Eigen methods run it (numpy, one
  BLAS thread, crops in parallel); `Seconds.of(work)` turns work into seconds. `ASSUMED_GMAC_PER_S` and
  `ASSUMED_SVD_GFLOP_PER_S` stand in for a measurement where none can be made (`assumed_seconds`: the rules'
  SLURM `runtime`, planned before any job runs; layersweep.sizing).
"""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .attribution.work import ZERO, LayerFacts, Work, method_layer_cost, pass_work, svd_flops
from .errors import LayersweepError

# Throughput assumed for resource requests: 2-core CPU measured here (VGG11 at 224 px, batch 4: see docs/cost.md);
# CUDA: an assumed sustained 15 TMAC/s in float32 (~2,000 VGG11 forwards/s on a modern GPU; docs/cost.md).
ASSUMED_GMAC_PER_S = {"cpu": 85.0, "cuda": 15000.0}
ASSUMED_BACKWARD_PER_FORWARD = 2.0  # a backward to the activations ~ twice a forward (measured ~1.7-2.3 on CPU)
# numpy's reduced SVD on one core, float32, in flops of `svd_flops` per second: measured 5-37 GFLOP/s on the
# (H*W, C) shapes of VGG11 at 64-224 px that take over 10 ms (2-core CPU of docs/benchmarks.md); assumed at the low
# end so that a SLURM job is not killed for time
ASSUMED_SVD_GFLOP_PER_S = 4.0


@dataclass(frozen=True)
class NetworkFacts:
    crop_size: int
    total_macs: int                      # per crop, features + head
    layers: tuple[LayerFacts, ...]       # every site, in order
    activation_floats: int               # every op's output, per crop (peak-memory estimates)
    parameters: int
    n_classes: int

    def layer(self, index: int) -> LayerFacts:
        return self.layers[index]

    def tail_before(self, index: int) -> float:
        """Share of the network from site `index` on (its own node included); -1 (the input) = 1."""
        return 1.0 if index < 0 else self.layers[index].tail_from


def node_macs(node, out: torch.Tensor) -> int:
    """Multiply-accumulates of one graph node per crop (conv and linear modules; the rest count 0)."""
    m = node.module
    if node.kind == "conv" and m is not None:
        kh, kw = m.kernel_size
        return int(out[0].numel() * (m.in_channels // m.groups) * kh * kw)
    if node.kind == "linear" and m is not None:  # once per token on a transformer's (N, C) sequence
        return int(out[0].numel() * m.in_features)
    if node.kind == "multiheadattention" and m is not None and out.ndim == 3:
        n, c = out.shape[1:]  # q, k, v and output projections, then QK^T and AV
        return int(4 * n * c * c + 2 * n * n * c)
    return 0


def network_facts(model: nn.Module, crop_size: int, layers=None) -> NetworkFacts:
    """Site facts of a traceable `model` (any device, meta included) for (1, 3, S, S) inputs.

    `layers`: the configured site indices (None = all); they decide which sites share perturbations.
    """
    from .attribution.layouts import to_grid
    from .attribution.perturb import layer_groups
    from .attribution.sites import site_table

    table = site_table(model)
    graph = table.graph
    param = next(model.parameters())
    # On the meta device this is shape arithmetic only; a model with real weights runs one crop of zeros.
    x = torch.zeros((1, 3, int(crop_size), int(crop_size)), device=param.device, dtype=param.dtype)
    try:
        with torch.no_grad():
            logits, values = graph.run(x)
    except RuntimeError as exc:  # a crop too small for the network's pools
        raise LayersweepError(f"the model cannot run on {crop_size}-pixel crops ({str(exc).splitlines()[0]}); "
                              "check config key 'data.crop_size'.") from None
    macs = {i: node_macs(graph.nodes[i], v) for i, v in values.items() if torch.is_tensor(v)}
    floats = sum(v[0].numel() for i, v in values.items() if torch.is_tensor(v) and i in graph.descendants(0))
    total = sum(macs.values())
    groups = layer_groups(graph)
    position_of = {site.node: site.index for site in table.sites} | {0: -1}
    chosen = set(range(len(table))) if layers is None else {int(l) for l in layers if int(l) >= 0}
    out, seen_groups = [], set()
    for site in table.sites:
        desc = graph.descendants(site.node)
        tail = sum(macs.get(i, 0) for i in desc if i != site.node) / total
        c, hh, ww = to_grid(site.layout, values[site.node]).shape[1:]  # a transformer's tokens on their grid
        group = position_of.get(groups[site.node][0], 10**6 + groups[site.node][0])
        shares_c = site.index in chosen and group in seen_groups
        if site.index in chosen:
            seen_groups.add(group)
        out.append(LayerFacts(site.index, site.name, site.kind, int(c), int(hh), int(ww), macs.get(site.node, 0),
                              tail, group, shares_c, tail + macs.get(site.node, 0) / total))
    params = sum(p.numel() for p in model.parameters())
    return NetworkFacts(int(crop_size), total, tuple(out), int(floats), int(params), int(logits.shape[-1]))


@functools.lru_cache(maxsize=8)
def _arch_facts(arch: str, n_classes: int, crop_size: int, layers: tuple | None) -> NetworkFacts:
    from .models import build_torchvision
    try:
        with torch.device("meta"):  # parameters without storage: facts in milliseconds
            model = build_torchvision(arch, n_classes).eval()  # BatchNorm as the engine runs it
    except NotImplementedError:  # RegNet computes its widths with tensors: built for real
        model = build_torchvision(arch, n_classes).eval()
    return network_facts(model, crop_size, layers)


def config_facts(config: dict, layers=None) -> NetworkFacts:
    """Facts of the configured model (arch, default vgg11; 20 classes) at `data.crop_size`."""
    from .model import N_CLASSES

    arch = config.get("model", {}).get("arch", "vgg11")
    key = None if layers is None else tuple(sorted(int(l) for l in layers))
    return _arch_facts(arch, N_CLASSES, int(config["data"]["crop_size"]), key)


# ------------------------------------------------------------------------------------------ seconds

@dataclass(frozen=True)
class Seconds:
    forward: float   # one full forward, per crop
    backward: float  # one full backward (to the input), per crop
    source: str = "measured"
    # (rows, cols) -> seconds of one SVD per crop (measure_svd_seconds); a shape not measured is priced by
    # svd_flops at ASSUMED_SVD_GFLOP_PER_S
    svd: dict = field(default_factory=dict)

    def svd_seconds(self, shape) -> float:
        shape = tuple(shape)
        if shape in self.svd:
            return self.svd[shape]
        return svd_flops(*shape) / (ASSUMED_SVD_GFLOP_PER_S * 1e9)

    def of(self, work: Work) -> float:
        return (work.forwards * self.forward + work.backwards * self.backward
                + sum(n * self.svd_seconds(shape) for shape, n in work.svds))


def assumed_seconds(facts: NetworkFacts, device: str) -> Seconds:
    """`device: auto` is assumed to be a CPU: a job sized for a GPU would be killed on a CPU node. The SVDs
    run on the CPU whatever the device (priced by svd_flops at ASSUMED_SVD_GFLOP_PER_S)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    fwd = facts.total_macs / (ASSUMED_GMAC_PER_S[kind] * 1e9)
    return Seconds(fwd, ASSUMED_BACKWARD_PER_FORWARD * fwd, f"assumed {ASSUMED_GMAC_PER_S[kind]:g} GMAC/s ({kind})")


def measure_svd_seconds(shapes, *, workers: int = 1, repeats: int = 3, seed: int = 0) -> dict:
    """Seconds per crop of one SVD of each (rows, cols) shape, run as the Eigen methods run it
    (`methods._cam.first_component_projection`: numpy's reduced SVD, here of a float32 matrix, one BLAS thread),
    median of `repeats` (one for a shape whose first SVD takes over a second), divided by `workers`: the
    crops of a batch run their SVDs in parallel, min(batch, torch threads) at a time."""
    import numpy as np
    import threadpoolctl

    rng = np.random.default_rng(seed)
    out = {}
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        for rows, cols in sorted({tuple(int(v) for v in s) for s in shapes}):
            x = rng.standard_normal((rows, cols), dtype=np.float32)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                np.linalg.svd(x, full_matrices=False)
                times.append(time.perf_counter() - t0)
                if times[0] > 1.0:
                    break
            out[(rows, cols)] = statistics.median(times) / max(1, int(workers))
    return out


def measure_seconds(model: nn.Module, crop_size: int, device, *, batch: int = 4, repeats: int = 3) -> Seconds:
    """Median of `repeats` timed forwards (no grad) and forward + backward (to the input) of `batch` random
    crops, after one warm-up, per crop. The backward is (forward + backward) minus forward."""
    from .attribution.graph import trace

    graph = trace(model)
    x = torch.randn(batch, 3, crop_size, crop_size, device=device)
    target = torch.zeros(batch, dtype=torch.int64, device=device)

    def sync():
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    def forward(h):
        return graph.run(h, keep=set())[0]

    def timed(fn) -> float:
        fn()  # warm-up: allocator, kernels
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def fwd_only():
        with torch.no_grad():
            forward(x)

    def fwd_bwd():
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad():
            score = forward(xr).gather(1, target[:, None]).sum()
            torch.autograd.grad(score, xr)

    t_fwd = timed(fwd_only)
    t_both = timed(fwd_bwd)
    return Seconds(t_fwd / batch, max(t_both - t_fwd, 0.0) / batch,
                   f"measured on {x.device}, batch {batch}, median of {repeats}")


# ------------------------------------------------------------------------------------- a method's cost

@dataclass
class MethodCost:
    method: str
    pass_kind: str
    pass_work: Work
    per_layer: dict = field(default_factory=dict)  # layer index -> Work

    @property
    def total(self) -> Work:
        out = self.pass_work
        for w in self.per_layer.values():
            out = out + w
        return out


def method_layers(method, attribution: dict, config: dict) -> list[int]:
    """The site indices `method` runs at (its own `layers` option, else attribution.layers)."""
    from .attribution.sites import arch_site_table
    from .config import method_layers_key

    key, value = method_layers_key(attribution, method.name)
    model = config.get("model", {})
    return arch_site_table(model.get("arch", "vgg11"), model.get("source", "torchvision")).resolve(value, key=key)


def method_cost(method, attribution: dict, config: dict) -> MethodCost:
    """Per-crop cost of one method over its configured layers."""
    from .attribution.registry import get_method, method_options

    method = get_method(method) if isinstance(method, str) else method
    layers = method_layers(method, attribution, config)
    facts = config_facts(config, layers)
    options = method_options(method.name, (attribution.get("options") or {}).get(method.name))
    fn = method_layer_cost(method)
    per_layer = {l: fn(facts.layer(l), options) for l in layers}
    return MethodCost(method.name, method.pass_kind, pass_work(method, facts, layers, attribution), per_layer)


def metric_work(metric: str, options: dict, method, config: dict) -> Work:
    """Per-crop work of a metric on one method's maps (the metric registry's `cost(options, n_layers)`): its
    forwards per map times the method's layers, plus its attribution passes per crop, each costing the method's
    whole pass (every layer at once). A metric that declares no cost counts nothing."""
    from .metrics.registry import get_metric

    m = get_metric(metric)
    if m.cost is None:
        return ZERO
    mc = method_cost(method, config["attribution"], config)
    c = m.cost(options, len(mc.per_layer))
    forwards = c.get("forwards_per_map", 0.0) * len(mc.per_layer)
    return Work(forwards, 0.0) + c.get("attribution_passes_per_crop", 0.0) * mc.total


# ------------------------------------------------------------------------------------- the cost table

COST_COLUMNS = ("method", "pass_kind", "layer", "name", "forwards", "backwards", "svds", "seconds_per_crop",
                "n_crops", "total_seconds", "total_hours")


def cost_table(methods, config: dict, n_crops: int, seconds: Seconds, metrics: dict | None = None):
    """Per method: one row for its pass ('pass'), one per layer, one 'total'; work and seconds per crop, and
    over the `n_crops` crops of the study. `metrics` ({metric: its options}, config metrics.compute): one
    more 'total' row per (method, metric), pass_kind 'metric <name>', for the metric's scoring work."""
    import pandas as pd

    facts = config_facts(config)
    rows = []
    for name in methods:
        mc = method_cost(name, config["attribution"], config)
        parts = [("pass", "shared pass", mc.pass_work)]
        parts += [(str(l), facts.layer(l).name, w) for l, w in mc.per_layer.items()]
        parts += [("total", "all layers", mc.total)]
        for layer, label, work in parts:
            per_crop = seconds.of(work)
            rows.append(dict(method=name, pass_kind=mc.pass_kind, layer=layer, name=label, forwards=work.forwards,
                             backwards=work.backwards, svds=work.n_svds, seconds_per_crop=per_crop,
                             n_crops=int(n_crops),
                             total_seconds=per_crop * n_crops, total_hours=per_crop * n_crops / 3600))
    for metric, options in (metrics or {}).items():  # rows "metric <name>": scoring work on each method's maps
        for name in methods:
            work = metric_work(metric, options, name, config)
            per_crop = seconds.of(work)
            rows.append(dict(method=name, pass_kind=f"metric {metric}", layer="total", name=f"metric {metric}",
                             forwards=work.forwards, backwards=work.backwards, svds=work.n_svds,
                             seconds_per_crop=per_crop, n_crops=int(n_crops), total_seconds=per_crop * n_crops,
                             total_hours=per_crop * n_crops / 3600))
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))


def svd_shapes(methods, config: dict) -> set:
    """The (rows, cols) of every SVD the configured methods run per crop (what measure_svd_seconds times)."""
    shapes = set()
    for name in methods:
        for work in method_cost(name, config["attribution"], config).per_layer.values():
            shapes.update(shape for shape, _ in work.svds)
    return shapes


def timing_model(config: dict, device) -> nn.Module:
    """A randomly initialised model of the configured architecture on `device` (timing needs no weights)."""
    from .model import N_CLASSES

    from .models import build_torchvision

    torch.manual_seed(0)
    return build_torchvision(config.get("model", {}).get("arch", "vgg11"), N_CLASSES).eval().to(device)
