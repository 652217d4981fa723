"""What an attribution run will cost, before it runs.

Unit: full-network equivalents per crop. `Work(forwards, backwards)`: a forward of the network after layer l
counts its tail share (MACs after l / all MACs), a full forward counts 1; a backward from the logits down to
layer l counts the tail share of l in units of one full backward. Work done outside the network is counted
apart: `Work.svds`, the reduced SVDs of (H*W, C) matrices that the Eigen CAMs run on the CPU (numpy, one per
crop and layer), whose time depends on the shape, not on the network's MACs.

- `network_facts(model, crop_size, layers)` reads the site facts from the model's traced graph by shape
  propagation on the meta device (no weights, no compute): C, H x W, MACs and tail share of every site
  (the tail of a site is the graph nodes computed from it), its layer group (perturb.layer_groups: a node and
  the ReLU / MaxPool that are the only consumers after it), and which configured sites reuse the
  perturbations of an earlier configured site of their group.
- A method's cost = its pass's cost (`pass_work`: the shared forward / backward every shard pays per crop)
  plus the sum over its layers of `method.cost(facts, options)` (the registry's `cost` field; a method that
  declares none gets its pass kind's default, `DEFAULT_LAYER_COST`).
- `measure_seconds` times a few forwards and backwards of the model on the device, per crop, at the crop
  size; `measure_svd_seconds` times one SVD of each (H*W, C) shape as the Eigen methods run it (numpy, one
  BLAS thread, crops in parallel); `Seconds.of(work)` turns work into seconds. `ASSUMED_GMAC_PER_S` and
  `ASSUMED_SVD_GFLOP_PER_S` stand in for a measurement where none can be made (the rules' SLURM `runtime`,
  planned before any job runs).
"""
from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import LayersweepError

# Throughput assumed for resource requests: 2-core CPU measured here (VGG11 at 224 px, batch 4: see docs/cost.md);
# CUDA: an assumed sustained 15 TMAC/s in float32 (~2,000 VGG11 forwards/s on a modern GPU; docs/cost.md).
ASSUMED_GMAC_PER_S = {"cpu": 85.0, "cuda": 15000.0}
ASSUMED_BACKWARD_PER_FORWARD = 2.0  # a backward to the activations ~ twice a forward (measured ~1.7-2.3 on CPU)
# numpy's reduced SVD on one core, float32, in flops of `svd_flops` per second: measured 5-37 GFLOP/s on the
# (H*W, C) shapes of VGG11 at 64-224 px that take over 10 ms (2-core CPU of docs/benchmarks.md); assumed at the low
# end so that a SLURM job is not killed for time
ASSUMED_SVD_GFLOP_PER_S = 4.0
BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class Work:
    """Full-network forward and backward equivalents (per crop unless said otherwise), and the CPU SVDs."""
    forwards: float = 0.0
    backwards: float = 0.0
    # ((rows, cols), count) pairs, sorted: `count` reduced SVDs of a (rows, cols) = (H*W, C) matrix
    svds: tuple = ()

    def __add__(self, other: "Work") -> "Work":
        counts = dict(self.svds)
        for shape, n in other.svds:
            counts[shape] = counts.get(shape, 0) + n
        return Work(self.forwards + other.forwards, self.backwards + other.backwards, tuple(sorted(counts.items())))

    def __mul__(self, k: float) -> "Work":
        return Work(self.forwards * k, self.backwards * k, tuple((shape, n * k) for shape, n in self.svds))

    @property
    def n_svds(self) -> float:
        return float(sum(n for _, n in self.svds))

    __rmul__ = __mul__


ZERO = Work()


@dataclass(frozen=True)
class LayerFacts:
    index: int              # site index (on a VGG: position in model.features)
    name: str               # site name (features.{index} on a VGG)
    kind: str               # node kind: conv | relu | maxpool | batchnorm | add | ...
    channels: int           # C of the layer's output
    height: int
    width: int
    macs: int               # multiply-accumulates of this op, per crop
    tail_share: float       # MACs after this site (of the nodes computed from it) / MACs of the whole network
    group: int              # site index of the node that opens this site's layer group (-1: the input)
    shares_channels: bool   # a configured site before it in its group already ran the channel perturbations
    tail_from: float = 1.0  # MACs of this site's node and the nodes computed from it / all MACs

    @property
    def positions(self) -> int:
        return self.height * self.width


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


# ------------------------------------------------------------------------------- per-layer costs

def no_layer_cost(facts: LayerFacts, options: dict) -> Work:
    """The shared pass already gives every layer (a gradient or DeepLift map per layer costs ~nothing)."""
    return ZERO


def grouped_deeplift_backward(facts: LayerFacts, options: dict) -> Work:
    """Zero-reference DeepLift (LIFT-CAM): one backward per conv group, for the input and the reference
    halves, down to the group's first configured layer."""
    return ZERO if facts.shares_channels else Work(backwards=2 * facts.tail_share)


def tail_per_channel(facts: LayerFacts, options: dict) -> Work:
    """One tail forward per channel (AblationCAM), shared by the layers of a group."""
    return ZERO if facts.shares_channels else Work(forwards=facts.channels * facts.tail_share)


def tail_per_channel_ordering(facts: LayerFacts, options: dict) -> Work:
    """SHAP-CAM|Pi|: `orderings` x C prefix coalitions + the empty one, shared by the layers of a group."""
    if facts.shares_channels:
        return ZERO
    return Work(forwards=(_count(options, "orderings") * facts.channels + 1) * facts.tail_share)


def tail_per_position_permutation(facts: LayerFacts, options: dict) -> Work:
    """Shap-CAM: `permutations` x H*W prefix coalitions + the empty one, from the layer itself. Every layer plays
    its own game (the engine keys its orderings by layer: under `absent: mean` a conv's and its ReLU's games
    differ), so nothing is shared within a group, unlike a count that shares a conv's and its ReLU's game (80,359·K; docs/cost.md)."""
    return Work(forwards=(_count(options, "permutations") * facts.positions + 1) * facts.tail_share)


def full_per_channel(facts: LayerFacts, options: dict) -> Work:
    """ScoreCAM: one full forward per channel's masked input (no sharing: each layer has its own masks)."""
    return Work(forwards=float(facts.channels))


def svd_of_layer(facts: LayerFacts, options: dict) -> Work:
    """The Eigen CAMs (EigenCAM, EigenGradCAM, SegEigenCAM): one reduced SVD of the layer's (H*W, C) matrix per
    crop, on the CPU (numpy, for the library's sign), beyond the shared pass."""
    return Work(svds=(((facts.positions, facts.channels), 1),))


def svd_flops(rows: int, cols: int) -> float:
    """Flops of a reduced SVD computing U_1, S and V of a (rows, cols) matrix (Golub & Van Loan, table 8.6.1,
    R-SVD: 6 m n^2 + 20 n^3 with m >= n); a wide matrix is its transpose's."""
    m, n = max(rows, cols), min(rows, cols)
    return 6.0 * m * n * n + 20.0 * n ** 3


def _count(options: dict, key: str) -> int:
    if key not in options:
        raise LayersweepError(f"the cost model needs the option '{key}' of this method "
                              f"(config key 'attribution.options.<method>.{key}').")
    return int(options[key])


# A method that declares no `cost` gets its pass kind's: gradient and DeepLift maps come with the shared pass;
# a perturbation method is assumed to run one tail forward per channel of each group (say so in its file).
DEFAULT_LAYER_COST = {
    "gradient": no_layer_cost,
    "deeplift": no_layer_cost,
    "deeplift0": grouped_deeplift_backward,
    "perturb": tail_per_channel,
}


# The issue's perturbation methods, for as long as their files declare no `cost=` (they were written in
# parallel with this model): the formulas of docs/cost.md. A method file's own `cost` always wins.
ISSUE_METHOD_COSTS = {
    "ablationcam": tail_per_channel,
    "shapcam_pi": tail_per_channel_ordering,
    "shapcam": tail_per_position_permutation,
    "scorecam": full_per_channel,
    "liftcam": grouped_deeplift_backward,
}


def method_layer_cost(method):
    fn = getattr(method, "cost", None)
    if fn is not None:
        return fn
    if method.name in ISSUE_METHOD_COSTS:
        return ISSUE_METHOD_COSTS[method.name]
    if method.pass_kind not in DEFAULT_LAYER_COST:
        raise LayersweepError(f"method {method.name!r} (pass {method.pass_kind!r}) declares no cost and its pass "
                              "kind has no default; add `cost=` to its register call.")
    return DEFAULT_LAYER_COST[method.pass_kind]


def gradient_backwards(method, n_classes: int) -> int:
    """Backwards of the gradient pass for this method alone (passes.gradient_pass): one if it takes the
    gradients, K more (one per class) if it takes the Hessian terms, none for activations-only methods."""
    from .attribution.passes import CLASS_TERMS, pass_arg_names

    args = pass_arg_names(method.fn)
    return int("grads" in args) + (n_classes if set(args) & set(CLASS_TERMS) else 0)


def pass_work(method, facts: NetworkFacts, layers, attribution: dict) -> Work:
    """The work every crop pays once for its method's pass, whatever the number of layers."""
    pass_kind = method.pass_kind
    lowest = min(layers)
    down = facts.tail_before(lowest) if lowest >= 0 else 1.0
    if pass_kind == "gradient":  # one forward, its backwards down to the lowest layer
        return Work(forwards=1.0, backwards=gradient_backwards(method, facts.n_classes) * down)
    if pass_kind == "deeplift":  # the crop, its baselines (forwarded once per batch if they fit), K backwards
        k, batch, pairs = attribution["n_baselines"], attribution["batch_size"], attribution["max_pairs"]
        baseline_forwards = k / batch if k <= pairs else float(k)
        return Work(forwards=1.0 + baseline_forwards, backwards=k * down)
    return Work(forwards=1.0)  # deeplift0, perturb, others: the shared forward; the rest is per layer


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


def method_options(method, attribution: dict) -> dict:
    """The method's option defaults (registry) overlaid with `attribution.options.<method>`."""
    opts = {k: getattr(v, "default", v) for k, v in (getattr(method, "options", None) or {}).items()}
    opts.update((attribution.get("options") or {}).get(method.name, {}) or {})
    return opts


def method_layers(method, attribution: dict, config: dict) -> list[int]:
    """The site indices `method` runs at (its own `layers` option, else attribution.layers)."""
    from .attribution.sites import arch_site_table

    opts = (attribution.get("options") or {}).get(method.name, {}) or {}
    key = f"attribution.options.{method.name}.layers" if "layers" in opts else "attribution.layers"
    model = config.get("model", {})
    table = arch_site_table(model.get("arch", "vgg11"), model.get("source", "torchvision"))
    return table.resolve(opts.get("layers", attribution["layers"]), key=key)


def method_cost(method, attribution: dict, config: dict) -> MethodCost:
    """Per-crop cost of one method over its configured layers."""
    from .attribution.registry import get_method

    method = get_method(method) if isinstance(method, str) else method
    layers = method_layers(method, attribution, config)
    facts = config_facts(config, layers)
    options = method_options(method, attribution)
    fn = method_layer_cost(method)
    per_layer = {l: fn(facts.layer(l), options) for l in layers}
    return MethodCost(method.name, method.pass_kind, pass_work(method, facts, layers, attribution), per_layer)


# --------------------------------------------------------------------------------------- resources

def attribution_memory_mb(method, config: dict) -> int:
    """Peak memory of one attribution job: the model's parameters plus the rows a pass holds at once.

    gradient: `batch_size` crops with activations and gradients (~3 floats per activation);
    deeplift(0): `max_pairs` (crop, baseline) pairs with deltas and multipliers (~3 per activation);
    perturb: `perturb_batch` (else `batch_size`) rows of activations without gradients (~2 per activation).
    """
    from .attribution.registry import get_method

    method = get_method(method) if isinstance(method, str) else method
    attribution = config["attribution"]
    facts = config_facts(config)
    act_mb = facts.activation_floats * BYTES_PER_FLOAT / 1e6
    if method.pass_kind == "gradient":
        rows, per_row = attribution["batch_size"], 3 * act_mb
    elif method.pass_kind in ("deeplift", "deeplift0"):
        rows, per_row = attribution["max_pairs"], 3 * act_mb
    else:
        rows, per_row = attribution.get("perturb_batch", attribution["batch_size"]), 2 * act_mb
    params_mb = facts.parameters * BYTES_PER_FLOAT / 1e6
    return int(math.ceil(1000 + params_mb + rows * per_row))


def attribution_runtime_min(method, config: dict, n_crops: int) -> int:
    """SLURM minutes for `n_crops` crops of one method: twice the forecast at the assumed throughput plus
    10 minutes of start-up (loading the model, the shard, writing)."""
    cost = method_cost(method, config["attribution"], config)
    seconds = assumed_seconds(config_facts(config), config.get("device", "cpu")).of(cost.total)
    return int(math.ceil(10 + 2 * n_crops * seconds / 60))


def added_metric_work(metric: str, options: dict, method, config: dict) -> Work:
    """Per-crop work of an added metric on one method's maps: its forwards per map times the method's layers,
    plus its attribution passes per crop, each costing the method's whole pass (every layer at once)."""
    from .metrics.registry import get_metric

    m = get_metric(metric)
    if m.cost is None:
        return ZERO
    mc = method_cost(method, config["attribution"], config)
    c = m.cost(options, len(mc.per_layer))  # the registry's contract: cost(options, n_layers)
    forwards = c.get("forwards_per_map", 0.0) * len(mc.per_layer)
    return Work(forwards, 0.0) + c.get("attribution_passes_per_crop", 0.0) * mc.total


def added_metric_minutes(metric: str, options: dict, method, config: dict, n_crops: int) -> int:
    """SLURM minutes of one added-metric shard, as `attribution_runtime_min`."""
    seconds = assumed_seconds(config_facts(config), config.get("device", "cpu")).of(
        added_metric_work(metric, options, method, config))
    return int(math.ceil(10 + 2 * n_crops * seconds / 60))


# ------------------------------------------------------------------------------------- the cost table

COST_COLUMNS = ("method", "pass_kind", "layer", "name", "forwards", "backwards", "svds", "seconds_per_crop",
                "n_crops", "total_seconds", "total_hours")


def cost_table(methods, config: dict, n_crops: int, seconds: Seconds, metrics: dict | None = None):
    """Per method: one row for its pass ('pass'), one per layer, one 'total'; work and seconds per crop, and
    over the `n_crops` crops of the study. `metrics` ({added metric: its options}, config metrics.compute): one
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
            work = added_metric_work(metric, options, name, config)
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
