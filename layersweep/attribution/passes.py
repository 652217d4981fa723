"""The two shared passes: every requested site of a batch from ONE forward and ONE backward.

Both run on the traced graph (graph.py) and address tensors by node index (node 0 is the model input).

Gradient pass (CAM family): one forward with autograd, one `torch.autograd.grad` of the summed target
logits w.r.t. every requested activation.

DeepLift pass (captum's DeepLift / DeepLiftShap, reproduced rule for rule). captum concatenates
[inputs; baselines] (one row per (image, baseline) pair on each side), runs the model with hooks and
backpropagates the target logit of BOTH halves; on ReLU and MaxPool the hooks replace the gradient by
DeepLift multipliers. This module does the same with a hand-written backward over the pairs, but
- the forward runs once per image and once per baseline (activations are per image, only the
  multipliers are per pair), and
- one backward serves every site, because the multiplier at a tensor depends only on the rules
  applied after it. Where a tensor has several consumers (a ResNet block's input feeds its first conv and
  the residual add), the multipliers of its consumers are summed, as autograd sums gradients; a residual
  add needs no rule of its own. Nodes without a rule (functional F.relu, GELU, LayerNorm, SiLU, gates)
  take the plain gradient at each half's own point, as captum's hooks leave them.
Rules, as in captum/attr/_core/deep_lift.py (eps = 1e-10):
- ReLU (`nonlinear`): m_in = g_out * dy / dx, or the plain gradient where |dx| < eps; per half.
- MaxPool (`maxpool`): with o, o_r the pooled input and reference, xmax = max(o, o_r):
  U = unpool(g_x * (xmax - o_r), argmax_x) + unpool(g_r * (o - xmax), argmax_r), m_in = U / dx, or the
  plain gradient where |dx| < eps. It mixes the two halves, so the reference half's gradient g_r is
  carried (only as far down as some MaxPool still needs it).
Two properties of captum's hook plumbing are reproduced because they change the numbers:
1. A nonlinear module whose only consumer is another one (every ReLU before a MaxPool in VGG) records
   its grad_output in a tensor hook that runs BEFORE the MaxPool's hook rewrites that gradient. So the
   ReLU's rule uses the PLAIN max-pool gradient (each half routed to its own argmax), not the MaxPool
   multiplier; the MaxPool multiplier only reaches the map at the MaxPool's input. This is why the maps
   below a ReLU->MaxPool pair do not sum to f(x) - f(b) (the gap is captum's convergence delta).
2. `LayerDeepLift(..., attribute_to_layer_input=True)` on a ReLU/MaxPool takes the gradient at a clone
   of the layer input, past which the layer's own hook never runs: the multiplier there is the plain
   gradient of that layer applied to the multiplier at its output. Site ("in", j) reproduces that.
One deliberate difference: where |dx| < eps captum's MaxPool rule returns `grad_input[0]`, the plain
gradient of the FIRST row of its whole batch broadcast to every row (a bug); here each pair gets its own
plain gradient, so results do not depend on how pairs are chunked. Those entries only reach the map
at the MaxPool's input, multiplied by |dx| < 1e-10 (the ReLU below uses the recorded plain gradient,
and its own eps entries lie where the MaxPool's do), so the maps agree with captum to rounding.
"""
from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import fx

from ..precision import autocast
from .graph import Graph, Node
from .layouts import to_grid

EPS = 1e-10  # captum DeepLift's default eps


# ----------------------------------------------------------------------------- gradient pass
CLASS_TERMS = ("class_sums", "class_grad_means")
POSITIONAL_ARGS = ("activations", "grads")
KEYWORD_ARGS = ("op", "position", "logits", "targets") + CLASS_TERMS


@functools.lru_cache(maxsize=None)
def pass_arg_names(fn) -> tuple[str, ...]:
    """The pass arguments `fn` takes (see registry.py): its positional parameters are (activations[, grads])
    whatever their names, its keyword-only ones are taken by name from `KEYWORD_ARGS`."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY)
    unknown = [n for n in keywords if n not in KEYWORD_ARGS]
    if not 1 <= len(positional) <= 2 or unknown:
        raise ValueError(f"gradient-pass method {fn.__qualname__} must take (activations[, grads], *, keywords from "
                         f"{KEYWORD_ARGS}), not {inspect.signature(fn)}")
    return POSITIONAL_ARGS[:len(positional)] + keywords


def _utility_seed(utility, logits: torch.Tensor, targets: torch.Tensor, dtype) -> torch.Tensor:
    """du/dz per image: the backward seed of a method explaining a utility u(z) instead of the target logit."""
    with torch.enable_grad():
        z = logits.detach().to(dtype).requires_grad_(True)
        (seed,) = torch.autograd.grad(utility(z, targets).sum(), z)
    return seed.to(logits.dtype)


def gradient_pass(graph: Graph, images, targets, nodes: dict, methods: dict, *,
                  amp_dtype: torch.dtype | None = None, layouts: dict | None = None):
    """CAM-family maps at `nodes` ({node index: position}) for every method in `methods` ({name: Method}).

    `position` is what a method sees as its `position` keyword (the site index, -1 = input) and its `op`
    is the graph node (None at the input). One forward serves every method. Then one backward per distinct
    seed: the target logit (shared by every method without a `utility`), and du/dz for each utility; each
    seed's gradients are turned into maps and freed before the next backward. Methods naming `class_sums` /
    `class_grad_means` (the Hessian term of ShapleyCAM) get K more backwards through the same graph, one per
    class k with seed e_k, each contracted at every node into <G_k, A> and mean_hw G_k before the next, so
    the K gradients dz_k/dA are never held at once (memory: one backward).

    `amp_dtype` (bf16 / float16) runs the forward and backward under autocast; the methods combine
    activations and gradients in float32 (float64 for float64 images).
    `layouts` {node: layout}: nodes whose tensor is not (B, C, H, W); activations and gradients alike are
    put on the (C, h, w) grid (layouts.py) before the methods see them.

    Returns ({node: {name: (B, H, W)}}, logits (B, n_classes),
             {node: {name: (B, C)}} channel weights of the methods registered with `weights=True`).
    """
    names = {name: pass_arg_names(m.fn) for name, m in methods.items()}
    seed_groups: dict = {}  # utility (None = target logit) -> names of the methods using its gradients
    for name, m in methods.items():
        if "grads" in names[name]:
            seed_groups.setdefault(m.utility, []).append(name)
    class_names = [name for name in methods if set(names[name]) & set(CLASS_TERMS)]
    no_grad_names = [name for name in methods if "grads" not in names[name] and name not in class_names]
    need_graph = bool(seed_groups or class_names)
    out_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32

    keys = sorted(nodes)
    with torch.set_grad_enabled(need_graph), autocast(images.device, amp_dtype):
        # the input requires grad so that every site is on the autograd graph; autograd.grad then only
        # walks back as far as the lowest requested site
        x = images.detach().clone().requires_grad_(need_graph)
        logits, values = graph.run(x, keep=set(keys))
    saved = {key: values[key] for key in keys}
    layouts = layouts or {}

    def grid(key, t):
        return to_grid(layouts.get(key, "nchw"), t)

    acts = {key: grid(key, saved[key].detach().to(out_dtype)) for key in keys}
    logits_out = logits.detach().to(out_dtype)
    maps: dict = {key: {} for key in keys}
    weights: dict = {key: {} for key in keys}

    def run(name, key, **available):
        m = methods[name]
        available.update(activations=acts[key], op=graph.nodes[key] if key > 0 else None, position=nodes[key],
                         logits=logits_out, targets=targets)
        args = names[name]
        n_pos = 2 if "grads" in args else 1
        out = m.fn(*(available[arg] for arg in args[:n_pos]), **{arg: available[arg] for arg in args[n_pos:]})
        if m.weights:
            out, weights[key][name] = out
        # pytorch-grad-cam's BaseCAM clamps every cam at 0 before any resizing
        maps[key][name] = out.clamp(min=0)

    for name in no_grad_names:
        for key in keys:
            run(name, key)
    backwards = len(seed_groups) + (int(logits.shape[1]) if class_names else 0)
    with torch.enable_grad(), autocast(images.device, amp_dtype):
        for utility, group in seed_groups.items():
            backwards -= 1
            if utility is None:
                score = logits.gather(1, targets[:, None]).sum()  # per-image target logit: images are independent
                grads = torch.autograd.grad(score, [saved[k] for k in keys], retain_graph=backwards > 0)
            else:
                seed = _utility_seed(utility, logits, targets, out_dtype)
                grads = torch.autograd.grad(logits, [saved[k] for k in keys], seed, retain_graph=backwards > 0)
            for key, grad in zip(keys, grads):
                grad = grid(key, grad.to(out_dtype))
                for name in group:
                    run(name, key, grads=grad)
            del grads
        if class_names:
            n_classes = int(logits.shape[1])
            sums = {key: acts[key].new_empty((len(targets), n_classes)) for key in keys}
            means = {key: acts[key].new_empty((len(targets), n_classes, acts[key].shape[1])) for key in keys}
            for k in range(n_classes):
                backwards -= 1
                seed = torch.zeros_like(logits)
                seed[:, k] = 1
                grads = torch.autograd.grad(logits, [saved[key] for key in keys], seed, retain_graph=backwards > 0)
                for key, grad in zip(keys, grads):
                    grad = grid(key, grad.to(out_dtype))
                    sums[key][:, k] = (grad * acts[key]).sum(dim=(1, 2, 3))
                    means[key][:, k] = grad.mean(dim=(2, 3))
                del grads
            for name in class_names:
                for key in keys:
                    run(name, key, class_sums=sums[key], class_grad_means=means[key])
    order = list(methods)
    maps = {key: {name: per[name] for name in order} for key, per in maps.items()}
    return maps, logits_out, weights


# ----------------------------------------------------------------------------- DeepLift pass
class Store:
    """Activations of a batch (no autograd): every node's output and every rule max-pool's argmax."""

    def __init__(self, values: dict, logits: torch.Tensor, n: int, batch: frozenset):
        self.values, self.logits, self.n = values, logits, n
        self.batch = batch  # nodes with one row per image (computed from the input); the rest are constants

    @staticmethod
    def forward(graph: Graph, x: torch.Tensor, mm_dtype) -> "Store":
        with torch.no_grad():
            logits, values = graph.run(x, mm_dtype=mm_dtype, maxpool_indices=True)
        return Store(values, logits, x.shape[0], graph.descendants(0))

    def per_row(self, key) -> bool:
        node = key[1] if isinstance(key, tuple) else key
        return node in self.batch and torch.is_tensor(self.values.get(key)) and self.values[key].ndim > 0

    def __getitem__(self, node: int) -> torch.Tensor:
        return self.values[node]

    def idx(self, node: int) -> torch.Tensor:
        return self.values[("idx", node)]

    def rows(self, rows: slice) -> "Store":
        """The rows `rows` of every activation (views)."""
        n = len(range(*rows.indices(self.n)))
        return Store({k: v[rows] if self.per_row(k) else v for k, v in self.values.items()}, self.logits[rows], n,
                     self.batch)

    def split(self, n: int) -> tuple["Store", "Store"]:
        """Rows [:n] and [n:] (views): images and baselines share one forward."""
        return self.rows(slice(0, n)), self.rows(slice(n, self.n))


def _unpool(node: Node, values: torch.Tensor, indices: torch.Tensor, in_shape) -> torch.Tensor:
    m = node.module
    return F.max_unpool2d(values, indices, m.kernel_size, m.stride, m.padding, output_size=list(in_shape[-2:]))


def _quirk(graph: Graph, j: int, i: int) -> bool:
    """captum's hook order: rule node j whose only consumer is rule node i records i's plain gradient."""
    return graph.nodes[j].rule is not None and graph.nodes[i].rule is not None and graph.sole_consumer(j) == i


class DeepLiftPlan:
    """Which nodes one backward must process, from the requested sites.

    Sites: ("out", i) = map at the output of node i (node 0 = the model input); ("in", i) = captum's
    attribute_to_layer_input map of a rule node i. `allowed`: only these nodes receive multipliers (LIFT-CAM:
    the descendants of the zero reference; elsewhere both halves agree and the multiplier is not needed).
    """

    def __init__(self, graph: Graph, sites: set, allowed=None):
        self.sites, self.allowed = sites, allowed
        outs = [i for kind, i in sites if kind == "out"]
        self.lowest_out = min(outs) if outs else len(graph.nodes)
        self.lowest = min(i for _, i in sites)
        q_needed = set()
        for node in graph.nodes[self.lowest:graph.logits + 1]:
            if node.rule != "maxpool" or not self.propagates(node.index):
                continue
            j = node.inputs[0]
            # the MaxPool multiplier is consumed by a map at its input, or flows further down (a rule
            # node whose only consumer is this max-pool uses the recorded plain gradient instead)
            if ("out", j) in sites or ("in", j) in sites or (self.propagates(j) and not _quirk(graph, j, node.index)):
                q_needed.add(node.index)
        self.q_needed = q_needed
        self.r_from = min(q_needed) if q_needed else len(graph.nodes)  # both halves at outputs of nodes >= r_from

    def propagates(self, i: int) -> bool:
        """Node i passes multipliers to its inputs."""
        return (i > self.lowest_out or ("in", i) in self.sites) and (self.allowed is None or i in self.allowed)


def deeplift_pass(graph: Graph, images, targets, baselines, sites: set, fns: dict,
                  *, max_pairs: int, n_classes: int, amp_dtype: torch.dtype | None = None,
                  layouts: dict | None = None):
    """DeepLift-family maps at `sites` for every method in `fns` ({name: fn(delta, multiplier)}).

    Pairs are processed in chunks of at most `max_pairs` (image, baseline) pairs; each chunk holds the
    activations of its own images and baselines only, so peak memory is bounded by `max_pairs`.
    `amp_dtype` (bf16 / float16) runs the convolutions and matmuls of the forward and backward in that dtype
    (as autocast would); the DeepLift rules and the sums over pairs stay in the images' dtype.
    `layouts` {node: layout}: deltas and multipliers of those nodes' maps are put on the (C, h, w) grid.
    Returns ({site: {name: (B, H, W)}} averaged over baselines, logits (B, n_classes)).
    """
    plan = DeepLiftPlan(graph, sites)
    mm = amp_dtype
    B, K = images.shape[0], baselines.shape[0]
    sums: dict = {site: {name: None for name in fns} for site in sites}
    logits = torch.empty((B, n_classes), dtype=images.dtype, device=images.device)

    def run_chunk(xs: Store, bs: Store, i0: int):
        with torch.no_grad():  # a hand-written backward: nothing here needs autograd but the fallbacks
            contribs = backward_chunk(graph, plan, xs, bs, targets[i0:i0 + xs.n], fns, n_classes, mm,
                                      layouts=layouts)
        for site, per_name in contribs.items():
            for name, c in per_name.items():
                acc = sums[site][name]
                if acc is None:
                    acc = sums[site][name] = torch.zeros((B,) + tuple(c.shape[1:]), dtype=c.dtype, device=c.device)
                acc[i0:i0 + c.shape[0]] += c

    if K <= max_pairs:
        group = max(1, max_pairs // K)  # images per chunk; images + baselines held: <= max_pairs + 1 rows
        if B <= group:  # a single chunk: images and baselines share one forward
            xs, bs = Store.forward(graph, torch.cat([images, baselines]), mm).split(B)
        else:  # separate, so that no chunk's images outlive it (split views would keep them)
            bs = Store.forward(graph, baselines, mm)
        for i0 in range(0, B, group):
            x = images[i0:i0 + group]
            if B > group:
                xs = Store.forward(graph, x, mm)
            logits[i0:i0 + x.shape[0]] = xs.logits
            run_chunk(xs, bs, i0)
            if B > group:
                del xs  # freed before the next chunk's forward
    else:  # more baselines than pairs allowed: one image at a time, baselines in slices
        for i0 in range(B):
            xs = Store.forward(graph, images[i0:i0 + 1], mm)
            logits[i0:i0 + 1] = xs.logits
            for k0 in range(0, K, max_pairs):
                run_chunk(xs, Store.forward(graph, baselines[k0:k0 + max_pairs], mm), i0)
    maps = {site: {name: acc / K for name, acc in per_name.items()} for site, per_name in sums.items()}
    return maps, logits


def _relu_rule(g, recorded, dx, dy, masks, s_below, want_gin):
    """captum's `nonlinear` rule on a ReLU, for the halves kept below; returns (multipliers, plain gradient or None)."""
    small = dx.abs() < EPS
    factor = dy.div_(dx)  # rescale rule dy/dx, shared by both halves; in place: dy's last use
    new = torch.empty((s_below,) + tuple(dx.shape), dtype=dx.dtype, device=dx.device)
    for h in range(s_below):
        if recorded is None:  # g * (relu' where |dx| < eps, else dy/dx)
            torch.where(small, masks[h], factor, out=factor)  # only the eps entries change
            torch.mul(g[h], factor, out=new[h])
        else:
            torch.where(small, g[h] * masks[h], recorded[h] * factor, out=new[h])
    gin = torch.stack([g[h] * masks[h] for h in range(s_below)]) if want_gin else None
    return new, gin


def _maxpool_rule(node, g, recorded, dx, out_x, out_b, idx_x, idx_b, in_shape, s_below, with_q, flat, unflat):
    """captum's `maxpool` rule; returns (multipliers, plain gradient) for the halves kept below.

    out_x, out_b: pooled image / baseline in pair layout (broadcasting to (G, Hb, ...)); idx_*: their argmaxes.
    """
    G, Hb = dx.shape[:2]
    halves = 2 if with_q else s_below
    idx = torch.empty((halves, G, Hb) + tuple(idx_x.shape[2:]), dtype=idx_x.dtype, device=dx.device)
    idx[0] = idx_x  # argmax of each half, per pair (half-major like g)
    if halves == 2:
        idx[1] = idx_b
    idx = flat(idx)
    gin = unflat(_unpool(node, flat(g[:s_below]), idx[:s_below * G * Hb], in_shape), s_below)
    if not with_q:  # nobody consumes the MaxPool multiplier: only its eps branch (= plain gradient) matters
        return gin, gin
    go = recorded if recorded is not None else g  # both halves (S == 2 here)
    xmax = torch.maximum(out_x, out_b)
    coef = torch.stack([xmax - out_b, out_x - xmax])
    u = unflat(_unpool(node, flat(coef.mul_(go)), idx, in_shape), 2)
    q = torch.add(u[0], u[1], out=u[0]).div_(dx)
    return torch.where(dx.abs() < EPS, gin, q), gin


def vjp(graph: Graph, node: Node, g: torch.Tensor, points: dict, mm) -> dict:
    """Plain gradient of node's output, g (R, ...), w.r.t. each tensor input: {input node: (R, ...)}.

    `points` {input node: (R, ...)}: the input values to differentiate at (any point for a linear node).
    Conv, BatchNorm, Linear, sums and reshapes are written out (no activations needed); the rest goes
    through autograd at the given point.
    """
    m, kind, j = node.module, node.kind, node.inputs[0] if node.inputs else None
    if kind == "conv" and node.fx_node.op == "call_module":
        w = m.weight.detach()
        gg = g
        if mm is not None:
            gg, w = g.to(mm), w.to(mm)
        shape = (g.shape[0],) + tuple(points[j].shape[1:])
        return {j: torch.nn.grad.conv2d_input(shape, w, gg, m.stride, m.padding, m.dilation, m.groups).to(g.dtype)}
    if kind == "linear" and node.fx_node.op == "call_module":
        w = m.weight.detach()
        return {j: (g.to(mm) @ w.to(mm)).to(g.dtype) if mm is not None else g @ w}
    if kind == "batchnorm" and node.fx_node.op == "call_module":
        scale = torch.rsqrt(m.running_var + m.eps)
        scale = scale if m.weight is None else m.weight * scale
        return {j: g * scale.detach().to(g.dtype).view(1, -1, 1, 1)}
    if kind in ("identity", "flatten", "reshape") and (len(node.inputs) == 1 or (
            kind == "reshape" and not any(torch.is_tensor(points.get(i)) for i in node.inputs[1:]))):
        # a reshape's other arguments are sizes, which a model may read off its batch (ViT: x.reshape(n, C, hw)
        # with n = x.shape[0]): they would not fit the R rows of pairs here, so the backward is written out
        return {j: g.reshape((g.shape[0],) + tuple(points[j].shape[1:]))}
    if kind == "add" and len(node.inputs) == 2 and all(points[i].shape == g.shape for i in node.inputs) \
            and all(isinstance(a, fx.Node) for a in node.fx_node.args):
        return {i: g for i in node.inputs}
    with torch.enable_grad():
        env = {graph.nodes[i].fx_node: (points[i].detach().requires_grad_(True) if torch.is_tensor(points[i])
                                        and points[i].is_floating_point() else points[i]) for i in node.inputs}
        out = graph.call(node, env)
        wrt = [i for i in node.inputs if torch.is_tensor(points[i]) and env[graph.nodes[i].fx_node].requires_grad
               and i in graph.descendants(0)]
        grads = torch.autograd.grad(out, [env[graph.nodes[i].fx_node] for i in wrt], g, allow_unused=True)
    return {i: (torch.zeros_like(points[i]) if gr is None else gr) for i, gr in zip(wrt, grads)}


def backward_chunk(graph: Graph, plan: DeepLiftPlan, xs: Store, bs: Store, targets, fns, n_classes, mm,
                   paired: bool = False, layouts: dict | None = None):
    """One DeepLift backward for the G x Hb pairs of a chunk; returns per-site maps summed over baselines.

    Gradients are (S, G, Hb, ...): S = 2 stacks captum's input half [0] and reference half [1] (one
    weight read per linear node for both), S = 1 at nodes below every max-pool that needs the reference
    half. Image-side and baseline-side activations broadcast over (G, Hb) instead of being copied per pair.
    `paired`: bs holds one reference per image (G rows, LIFT-CAM's zero reference): pairs (G, 1).
    Each rule runs in its own function so that its temporaries are freed before the next node.
    `layouts` {node: layout}: a map at such a node sees its delta and multiplier on the (C, h, w) grid.
    """
    G = xs.n
    Hb = 1 if paired else bs.n

    def px(t):
        return t[:, None]

    def pb(t):
        return t[:, None] if paired else t[None]

    deltas: dict = {}

    def delta(i):  # a_i(x) - a_i(b) per pair, cached: a node feeds its map, its rule and its consumers' rules
        d = deltas.get(i)
        if d is None:
            d = deltas[i] = px(xs[i]) - pb(bs[i])
        return d

    def flat(t):  # (S, G, Hb, ...) -> (S*G*Hb, ...)
        return t.reshape((-1,) + tuple(t.shape[3:]))

    def unflat(t, s):
        return t.reshape((s, G, Hb) + tuple(t.shape[1:]))

    def point(i, h):  # half h's value of node i, one row per pair
        v = xs[i] if h == 0 else bs[i]
        if not xs.per_row(i):
            return v
        t = (px(v) if h == 0 else pb(v)).expand((G, Hb) + tuple(v.shape[1:]))
        return t.reshape((-1,) + tuple(v.shape[1:]))

    out = {}

    layouts = layouts or {}

    def record(site, d, mult):
        layout = layouts.get(site[1], "nchw") if site[0] == "out" else "nchw"
        d, mult = to_grid(layout, d), to_grid(layout, mult)
        out[site] = {name: fn(d, mult).sum(dim=1) for name, fn in fns.items()}

    S0 = 2 if plan.q_needed else 1
    grads: dict = {}
    # both halves start from the target logit (captum selects the target in both halves)
    grads[graph.logits] = F.one_hot(targets, n_classes).to(xs.logits.dtype)[None, :, None].expand(S0, G, Hb, n_classes)
    recorded: dict = {}  # plain grads recorded by a rule node whose only consumer is a rule node

    def give(j, contribution):
        if plan.allowed is not None and j not in plan.allowed:
            return
        if j in grads:
            grads[j] = grads[j] + contribution
        else:
            grads[j] = contribution

    for node in reversed(graph.nodes[plan.lowest:graph.logits + 1]):
        i = node.index
        g = grads.pop(i, None)
        if g is None:
            continue
        if ("out", i) in plan.sites:
            record(("out", i), delta(i), g[0])
        if not plan.propagates(i) or not node.inputs:
            continue
        S = g.shape[0]
        tensor_inputs = [j for j in node.inputs if xs.per_row(j) and xs[j].is_floating_point()]
        if not tensor_inputs:
            continue
        j0 = tensor_inputs[0]
        s_below = 2 if (S == 2 and max(tensor_inputs) >= plan.r_from) else 1
        rec = recorded.pop(i, None)
        quirk_below = _quirk(graph, j0, i)
        if node.rule == "relu":
            masks = (px(xs[i] > 0), pb(bs[i] > 0))  # relu' of each half
            want_gin = ("in", i) in plan.sites or quirk_below
            new, gin = _relu_rule(g, rec, delta(j0), delta(i), masks, s_below, want_gin)
            give(j0, new)
        elif node.rule == "nonlinear":  # rescale rule; the plain gradient of each half where |dx| < eps
            dx, factor = delta(j0), delta(i).div_(delta(j0))
            small = dx.abs() < EPS
            go = rec if rec is not None else g
            plain = torch.stack([unflat(vjp(graph, node, flat(g[h:h + 1]), {j0: point(j0, h)}, mm)[j0], 1)[0]
                                 for h in range(s_below)])
            new = torch.where(small, plain, go[:s_below] * factor)
            gin = plain
            give(j0, new)
        elif node.rule == "maxpool":
            new, gin = _maxpool_rule(node, g, rec, delta(j0), px(xs[i]), pb(bs[i]), px(xs.idx(i)), pb(bs.idx(i)),
                                     xs[j0].shape, s_below, i in plan.q_needed, flat, unflat)
            give(j0, new)
        else:
            gin = None
            if node.linear:
                pts = {j: (torch.cat([point(j, 0)] * s_below) if xs.per_row(j) else xs.values.get(j))
                       for j in node.inputs}
                per_input = vjp(graph, node, flat(g[:s_below]), pts, mm)
                for j, c in per_input.items():
                    if j not in tensor_inputs:
                        continue
                    give(j, unflat(c, s_below)[:2 if (s_below == 2 and j >= plan.r_from) else 1])
            else:  # captum's fallback: the plain gradient of each half at its own point
                halves = []
                for h in range(s_below):
                    pts = {j: point(j, h) for j in node.inputs if j in xs.values}
                    halves.append(vjp(graph, node, g[h].reshape((-1,) + tuple(g.shape[3:])), pts, mm))
                for j in tensor_inputs:
                    c = torch.stack([unflat(hv[j], 1)[0] for hv in halves])
                    give(j, c[:2 if (s_below == 2 and j >= plan.r_from) else 1])
        if node.rule is not None:
            if ("in", i) in plan.sites:
                record(("in", i), delta(j0), gin[0])
            if quirk_below:
                recorded[j0] = gin
            del gin
        deltas.pop(i, None)  # its map and the rules that read it are done
    return out
