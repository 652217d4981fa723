"""Any traceable network as a graph of named nodes, run by our own interpreter.

`trace(model)` traces the model once with torch.fx (torchvision's `NodePathTracer`, so nodes carry the
names `get_graph_node_names` gives: `layer3.1.relu_1` is the second call of `layer3.1.relu`,
`layer3.1.add` the residual sum). The trace is only a description: the interpreter (`Graph.run`,
`Graph.call`) applies each node itself, with the caller's modules and parameters, so the caller's model is
never copied or changed and none of its hooks fire. What the interpreter changes, and why:
- out of place: `ReLU(inplace=True)` runs as `F.relu`, `out += identity` as `out + identity`, any other module
  with `inplace=True` gets a copy of its input. Otherwise a stored activation would be overwritten by the
  next op (pytorch-grad-cam on the CPU stores bn2 + identity as "bn2" for this reason);
- one node per call: a module called twice (torchvision's ResNet calls one `relu` 2-3 times per block) is
  two nodes with two names, so each call has its own activation and its own DeepLift rule;
- eval semantics: the model must be in eval mode (BatchNorm a fixed affine map, Dropout the identity).

DeepLift rules (captum's `SUPPORTED_NON_LINEAR`, matched by exact type as captum does): `nn.ReLU`, `nn.ELU`,
`nn.LeakyReLU`, `nn.Sigmoid`, `nn.Tanh`, `nn.Softplus` (the rescale rule) and `nn.MaxPool2d` modules. Every
other node takes the plain gradient (captum's fallback): functional `F.relu`, ReLU6, SiLU, GELU, LayerNorm,
sigmoid gates, and `nn.Softmax` (captum's own softmax rule is not reproduced). `Node.linear` marks nodes whose vector-Jacobian
product does not depend on the point (conv, BatchNorm, linear, pooling by average, sums, reshapes).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import LayersweepError

# captum's SUPPORTED_NON_LINEAR, matched by exact type as captum does: "nonlinear" is its rescale rule
RULES = {nn.ReLU: "relu", nn.MaxPool2d: "maxpool", nn.ELU: "nonlinear", nn.LeakyReLU: "nonlinear",
         nn.Sigmoid: "nonlinear", nn.Tanh: "nonlinear", nn.Softplus: "nonlinear"}
MODULE_KINDS = ((nn.Conv2d, "conv"), (nn.BatchNorm2d, "batchnorm"), (nn.ReLU, "relu"), (nn.MaxPool2d, "maxpool"),
                (nn.Linear, "linear"), (nn.AdaptiveAvgPool2d, "avgpool"), (nn.AvgPool2d, "avgpool"),
                (nn.Dropout, "identity"), (nn.Identity, "identity"), (nn.Flatten, "flatten"),
                (nn.LayerNorm, "layernorm"), (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Hardswish, "hardswish"),
                (nn.Hardsigmoid, "hardsigmoid"), (nn.Sigmoid, "sigmoid"), (nn.ReLU6, "relu6"))
FUNCTION_KINDS = {operator.add: "add", operator.iadd: "add", torch.add: "add", torch.cat: "cat",
                  torch.flatten: "flatten", F.relu: "relu", torch.relu: "relu", F.adaptive_avg_pool2d: "avgpool",
                  operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", operator.getitem: "getitem",
                  torch.permute: "permute", torch.transpose: "permute"}
METHOD_KINDS = {"flatten": "flatten", "view": "reshape", "reshape": "reshape", "permute": "permute",
                "contiguous": "identity", "mean": "mean", "relu": "relu", "relu_": "relu", "add": "add",
                "add_": "add", "transpose": "permute"}
# kinds whose vector-Jacobian product is the same at every point
LINEAR_KINDS = {"conv", "batchnorm", "linear", "avgpool", "identity", "flatten", "add", "cat", "reshape",
                "permute", "mean", "getitem", "input", "stochasticdepth"}
OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul, operator.isub: operator.sub}


@dataclass
class Node:
    index: int
    name: str                     # torchvision's node name: "layer1.0.relu_1", "features.5", "x" for the input
    fx_node: fx.Node
    kind: str                     # conv | batchnorm | relu | maxpool | linear | add | cat | ... | input | output
    module: nn.Module | None      # the caller's module of a call_module node
    rule: str | None              # "relu" | "maxpool": captum's DeepLift rule applies; None: plain gradient
    inputs: list[int] = field(default_factory=list)      # producer nodes, in argument order (tensors and others)
    consumers: list[int] = field(default_factory=list)
    linear: bool = False
    # nn.MultiheadAttention returns (output, weights): its node yields the output alone (tuple_item 0) and
    # each `getitem` of that tuple is an identity (item 0) or None (item 1), so every value is a tensor
    tuple_item: int | None = None

    @property
    def module_path(self) -> str:
        """The module the node belongs to: 'layer1.0' for 'layer1.0.relu_1' / 'layer1.0.add'."""
        return str(self.fx_node.target) if self.fx_node.op == "call_module" else self.name.rsplit(".", 1)[0] if "." in self.name else ""


def _kind_of(fx_node: fx.Node, modules: dict) -> tuple[str, nn.Module | None]:
    if fx_node.op == "placeholder":
        return "input", None
    if fx_node.op == "output":
        return "output", None
    if fx_node.op == "get_attr":
        return "constant", None
    if fx_node.op == "call_module":
        m = modules[fx_node.target]
        for cls, kind in MODULE_KINDS:
            if type(m) is cls:
                return kind, m
        name = type(m).__name__.lower()
        return name, m
    if fx_node.op == "call_function":
        return FUNCTION_KINDS.get(fx_node.target, getattr(fx_node.target, "__name__", str(fx_node.target)).lower()), None
    return METHOD_KINDS.get(fx_node.target, str(fx_node.target)), None


class Graph:
    """The traced network: `nodes` in execution (topological) order, node 0 the input, the last the output."""

    def __init__(self, model: nn.Module, gm: fx.Graph, qualnames: dict):
        self.model = model
        self.modules = dict(model.named_modules())
        fx_nodes = [n for n in gm.nodes]
        placeholders = [n for n in fx_nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise LayersweepError(f"the model {type(model).__name__} takes {len(placeholders)} inputs; the attribution engine needs a model of one image tensor.")
        self.nodes: list[Node] = []
        self._by_fx: dict = {}
        for i, n in enumerate(fx_nodes):
            kind, module = _kind_of(n, self.modules)
            rule = RULES.get(type(module)) if module is not None else None
            name = qualnames.get(n, n.name) if n.op != "placeholder" else "input"
            node = Node(i, name, n, kind, module, rule, linear=kind in LINEAR_KINDS)
            self.nodes.append(node)
            self._by_fx[n] = i
        for node in self.nodes:
            for producer in node.fx_node.all_input_nodes:
                j = self._by_fx[producer]
                node.inputs.append(j)
                self.nodes[j].consumers.append(node.index)
        for node in self.nodes:
            getitems = [self.nodes[c] for c in node.consumers]
            if isinstance(node.module, nn.MultiheadAttention) and getitems and all(
                    c.kind == "getitem" and len(c.fx_node.args) == 2 and isinstance(c.fx_node.args[1], int)
                    for c in getitems):
                node.tuple_item = 0
                for c in getitems:
                    c.tuple_item, c.kind, c.linear = c.fx_node.args[1], "identity", True
        outputs = self.nodes[-1].inputs
        if self.nodes[-1].kind != "output" or len(outputs) != 1:
            raise LayersweepError(f"the model {type(model).__name__} does not return one tensor of logits; the attribution engine needs one.")
        self.logits = outputs[0]
        self.by_name = {node.name: node.index for node in self.nodes}
        self._descendants: dict = {}

    # ------------------------------------------------------------------ structure
    def descendants(self, index: int) -> frozenset:
        """Nodes computed from node `index` (itself included), up to the logits."""
        if index not in self._descendants:
            out = {index}
            for node in self.nodes[index + 1:]:
                if any(j in out for j in node.inputs):
                    out.add(node.index)
            self._descendants[index] = frozenset(out)
        return self._descendants[index]

    def plain_gradient_nodes(self) -> frozenset:
        """Nodes where DeepLift takes the plain gradient though they are not linear (captum's fallback): no rule
        of their own, not a linear kind, not a product with a constant."""
        batch = self.descendants(0)
        out = set()
        for node in self.nodes:
            if node.index not in batch or node.rule is not None or node.linear or node.kind in ("output", "input"):
                continue
            if node.kind == "mul" and sum(j in batch for j in node.inputs) <= 1:
                continue  # a scale by a parameter (ConvNeXt's layer scale) is linear
            out.add(node.index)
        return frozenset(out)

    def deeplift_rules(self, index: int) -> str:
        """'exact' when every node after node `index` is linear or has captum's rule, else 'gradient_fallback'
        (the multipliers at a tensor depend only on what comes after it)."""
        return "gradient_fallback" if self.descendants(index) & self.plain_gradient_nodes() - {index} else "exact"

    def sole_consumer(self, index: int) -> int | None:
        c = self.nodes[index].consumers
        return c[0] if len(c) == 1 else None

    # ------------------------------------------------------------------ running
    def call(self, node: Node, env, *, mm_dtype: torch.dtype | None = None, return_indices: bool = False):
        """Apply one node to the values in `env` (a mapping fx.Node -> value), out of place."""
        n = node.fx_node
        args = fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
        if node.tuple_item is not None and node.kind == "identity":  # an item of attention's (output, weights)
            return args[0] if node.tuple_item == 0 else None
        if node.tuple_item is not None:
            return node.module(*args, **kwargs)[node.tuple_item]
        if n.op == "call_module":
            m = node.module
            if node.kind in ("relu", "relu6") and type(m) in (nn.ReLU, nn.ReLU6):
                return F.relu(args[0]) if node.kind == "relu" else F.relu6(args[0])
            if node.kind in ("identity", "stochasticdepth"):  # Dropout and stochastic depth: eval semantics
                return args[0]
            if node.kind == "batchnorm" and (m.training or m.running_mean is None):
                raise LayersweepError(f"model.{node.name} is a BatchNorm2d in training mode or without running statistics; the attribution engine needs model.eval() (BatchNorm as a fixed affine map).")
            if node.kind == "maxpool" and return_indices:
                return F.max_pool2d(args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
            if mm_dtype is not None and node.kind in ("conv", "linear"):
                x = args[0]
                w = m.weight.to(mm_dtype)
                b = None if m.bias is None else m.bias.to(mm_dtype)
                out = m._conv_forward(x.to(mm_dtype), w, b) if node.kind == "conv" else F.linear(x.to(mm_dtype), w, b)
                return out.to(x.dtype)
            if getattr(m, "inplace", False) and args and torch.is_tensor(args[0]):
                args = (args[0].clone(),) + tuple(args[1:])
            return m(*args, **kwargs)
        if n.op == "call_function":
            fn = OUT_OF_PLACE.get(n.target, n.target)
            if kwargs.get("inplace"):
                kwargs = {**kwargs, "inplace": False}
            return fn(*args, **kwargs)
        if n.op == "call_method":
            name = n.target
            if name.endswith("_") and not name.endswith("__") and hasattr(torch.Tensor, name[:-1]):
                name = name[:-1]  # add_ -> add: never in place
            return getattr(args[0], name)(*args[1:], **kwargs)
        if n.op == "get_attr":
            obj = self.model
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        raise LayersweepError(f"node {node.name} of the traced model has the unsupported op {n.op!r}.")

    def run(self, x: torch.Tensor, *, keep=None, mm_dtype=None, maxpool_indices: bool = False):
        """Forward of input x. Returns (logits, values): values[i] the output of node i for i in `keep`
        (all nodes when keep is None); with `maxpool_indices`, the argmax of each rule max-pool is in
        values[("idx", i)]."""
        env: dict = {}
        values: dict = {}
        last_use = self._last_use(keep)
        for node in self.nodes[:-1]:
            if node.kind == "input":
                out = x
            elif maxpool_indices and node.rule == "maxpool":
                out, values[("idx", node.index)] = self.call(node, env, return_indices=True)
            else:
                out = self.call(node, env, mm_dtype=mm_dtype)
            env[node.fx_node] = out
            if keep is None or node.index in keep:
                values[node.index] = out
            for j in last_use.get(node.index, ()):  # free what no later node reads
                if keep is None or j not in keep:
                    env.pop(self.nodes[j].fx_node, None)
        return env[self.nodes[self.logits].fx_node], values

    def run_from(self, start: int, value: torch.Tensor, base, *, mm_dtype=None, maxpool_indices: bool = False,
                 keep_all: bool = False):
        """The network with node `start`'s output replaced by `value`: only the descendants of `start` are
        recomputed; every other node's value is `base(index)` (the clean forward, expanded to value's rows).
        Returns (logits, values of the recomputed nodes if keep_all, else {})."""
        desc = self.descendants(start)
        env: _Lazy = _Lazy(self, base)
        env.set(start, value)
        values: dict = {start: value} if keep_all else {}
        for node in self.nodes[start + 1:self.logits + 1]:
            if node.index not in desc:
                continue
            if maxpool_indices and node.rule == "maxpool":
                out, idx = self.call(node, env, return_indices=True)
                if keep_all:
                    values[("idx", node.index)] = idx
            else:
                out = self.call(node, env, mm_dtype=mm_dtype)
            env.set(node.index, out)
            if keep_all:
                values[node.index] = out
        return env[self.nodes[self.logits].fx_node], values

    def _last_use(self, keep) -> dict:
        last: dict = {}
        for node in self.nodes:
            for j in node.inputs:
                last[j] = node.index
        out: dict = {}
        for j, i in last.items():
            if j != self.logits:
                out.setdefault(i, []).append(j)
        return out


class _Lazy(dict):
    """fx.Node -> value: recomputed nodes as set, every other node read from `base(index)` when first asked."""

    def __init__(self, graph: Graph, base):
        super().__init__()
        self.graph, self.base = graph, base

    def set(self, index: int, value) -> None:
        self[self.graph.nodes[index].fx_node] = value

    def __missing__(self, fx_node):
        value = self.base(self.graph._by_fx[fx_node])
        self[fx_node] = value
        return value


def check_eval_mode(model: nn.Module) -> None:
    training = [name for name, m in model.named_modules() if m.training]
    if training:
        raise LayersweepError(f"the model is in training mode (module '{training[0] or type(model).__name__}'); "
                              "attribution is defined in eval mode: call model.eval() first.")


_CACHE: dict = {}


class _ChainOfVGG(nn.Module):
    """torchvision's VGG.forward over a model that has `features`, `avgpool` and `classifier` but no forward
    of its own (a VGG skeleton): the modules are the model's, so node names and parameters are too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.features, self.avgpool, self.classifier = model.features, model.avgpool, model.classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def trace(model: nn.Module) -> Graph:
    """The model's graph, traced once per model object (and again if its module tree changed)."""
    import torchvision
    from torchvision.models.feature_extraction import NodePathTracer

    key = id(model)
    signature = tuple((name, id(m)) for name, m in model.named_modules())
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model and hit[1] == signature:
        return hit[2]
    root = model
    if type(model).forward is nn.Module.forward and all(hasattr(model, k) for k in ("features", "avgpool", "classifier")):
        root = _ChainOfVGG(model)
    leaf = [torchvision.ops.StochasticDepth, torchvision.ops.misc.Permute]
    tracer = NodePathTracer(autowrap_modules=(math, torchvision.ops), leaf_modules=leaf)
    try:
        g = tracer.trace(root)
    except Exception as exc:  # data-dependent control flow and the like
        raise LayersweepError(f"the model {type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); the attribution engine needs a traceable model.") from None
    graph = Graph(root, g, tracer.node_to_qualname)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = (model, signature, graph)
    return graph
