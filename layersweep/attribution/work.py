"""The work an attribution method does per crop, in full-network equivalents: what each method file declares
(`cost=` of `register`) and what the cost model (layersweep.cost) adds up.

Unit: full-network equivalents per crop. `Work(forwards, backwards)`: a forward of the network after layer l
counts its tail share (MACs after l / all MACs), a full forward counts 1; a backward from the logits down to
layer l counts the tail share of l in units of one full backward. Work done outside the network is counted
apart: `Work.svds`, the reduced SVDs of (H*W, C) matrices that the Eigen CAMs run on the CPU (numpy, one per
crop and layer), whose time depends on the shape, not on the network's MACs.

A method's work = its pass's (`pass_work`: the shared forward / backward every shard pays per crop) plus the
sum over its layers of `method.cost(facts, options)` (the registry's `cost` field, one of the per-layer
functions below; a method that declares none gets its pass kind's default, `DEFAULT_LAYER_COST`). `facts` is a
`LayerFacts`, read from the model by `layersweep.cost.network_facts`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LayersweepError
from .passes import CLASS_TERMS, pass_arg_names

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
    differ), so nothing is shared within a group, unlike a count that shares a conv's and its ReLU's game
    (80,359·K; docs/cost.md)."""
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


def method_layer_cost(method):
    """The per-layer work function of a registered method: its own `cost`, else its pass kind's default."""
    fn = getattr(method, "cost", None)
    if fn is not None:
        return fn
    if method.pass_kind not in DEFAULT_LAYER_COST:
        raise LayersweepError(f"method {method.name!r} (pass {method.pass_kind!r}) declares no cost and its pass "
                              "kind has no default; add `cost=` to its register call.")
    return DEFAULT_LAYER_COST[method.pass_kind]


def gradient_backwards(method, n_classes: int) -> int:
    """Backwards of the gradient pass for this method alone (passes.gradient_pass): one if it takes the
    gradients, K more (one per class) if it takes the Hessian terms, none for activations-only methods."""
    args = pass_arg_names(method.fn)
    return int("grads" in args) + (n_classes if set(args) & set(CLASS_TERMS) else 0)


def pass_work(method, facts, layers, attribution: dict) -> Work:
    """The work every crop pays once for its method's pass, whatever the number of layers (`facts`: the
    network's, layersweep.cost.NetworkFacts)."""
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
