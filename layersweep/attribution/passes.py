"""The two shared passes: every requested layer of a batch from ONE forward and ONE backward.

Positions: position p in -1..n-1 is the output of `model.features[p]`; -1 is the model input.

Gradient pass (CAM family): one forward with autograd from the lowest requested position on, one
`torch.autograd.grad` of the summed target logits w.r.t. every requested activation.

DeepLift pass (captum's DeepLift / DeepLiftShap, reproduced rule for rule). captum concatenates
[inputs; baselines] (one row per (image, baseline) pair on each side), runs the model with hooks and
backpropagates the target logit of BOTH halves; on ReLU and MaxPool the hooks replace the gradient by
DeepLift multipliers. This module does the same with a hand-written backward over the pairs, but
- the forward runs once per image and once per baseline (activations are per image, only the
  multipliers are per pair), and
- one backward serves every layer, because the multiplier at a tensor depends only on the rules
  applied after it.
Rules, as in captum/attr/_core/deep_lift.py (eps = 1e-10):
- ReLU (`nonlinear`): m_in = g_out * dy / dx, or the plain gradient where |dx| < eps; per half.
- MaxPool (`maxpool`): with o, o_r the pooled input and reference, xmax = max(o, o_r):
  U = unpool(g_x * (xmax - o_r), argmax_x) + unpool(g_r * (o - xmax), argmax_r), m_in = U / dx, or the
  plain gradient where |dx| < eps. It mixes the two halves, so the reference half's gradient g_r is
  carried (only as far down as some MaxPool still needs it).
Two properties of captum's hook plumbing are reproduced because they change the numbers:
1. A nonlinear module directly followed by another one (every ReLU before a MaxPool in VGG) records
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

from ..precision import autocast
from .network import NONLINEAR, Op, forward_op, linear_backward

EPS = 1e-10  # captum DeepLift's default eps


# ----------------------------------------------------------------------------- gradient pass
CLASS_TERMS = ("class_sums", "class_grad_means")
_POSITIONAL = ("activations", "grads")
_KEYWORDS = ("op", "position", "logits", "targets") + CLASS_TERMS


@functools.lru_cache(maxsize=None)
def _arg_names(fn) -> tuple[str, ...]:
    """The pass arguments `fn` takes (see registry.py): its positional parameters are (activations[, grads])
    whatever their names, its keyword-only ones are taken by name from `_KEYWORDS`."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY)
    unknown = [n for n in keywords if n not in _KEYWORDS]
    if not 1 <= len(positional) <= 2 or unknown:
        raise ValueError(f"gradient-pass method {fn.__qualname__} must take (activations[, grads], *, keywords from "
                         f"{_KEYWORDS}), not {inspect.signature(fn)}")
    return _POSITIONAL[:len(positional)] + keywords


def _utility_seed(utility, logits: torch.Tensor, targets: torch.Tensor, dtype) -> torch.Tensor:
    """du/dz per image: the backward seed of a method explaining a utility u(z) instead of the target logit."""
    with torch.enable_grad():
        z = logits.detach().to(dtype).requires_grad_(True)
        (seed,) = torch.autograd.grad(utility(z, targets).sum(), z)
    return seed.to(logits.dtype)


def gradient_pass(ops: list[Op], images, targets, positions, methods: dict, *,
                  amp_dtype: torch.dtype | None = None):
    """CAM-family maps at `positions` for every method in `methods` ({name: registry.Method}).

    One forward serves every method. Then one backward per distinct seed: the target logit (shared by
    every method without a `utility`), and du/dz for each utility; each seed's gradients are turned into
    maps and freed before the next backward. Methods naming `class_sums` / `class_grad_means` (the Hessian
    term of ShapleyCAM, docs/methods.md) get K more backwards through the same graph, one per class k with
    seed e_k, each contracted at every position into <G_k, A> and mean_hw G_k before the next, so the K
    gradients dz_k/dA are never held at once (memory: one backward).

    `amp_dtype` (bf16 / float16) runs the forward and backward under autocast; the methods combine
    activations and gradients in float32 (float64 for float64 images).

    Returns ({position: {name: (B, H, W)}}, logits (B, n_classes),
             {position: {name: (B, C)}} channel weights of the methods registered with `weights=True`).
    """
    names = {name: _arg_names(m.fn) for name, m in methods.items()}
    seed_groups: dict = {}  # utility (None = target logit) -> names of the methods using its gradients
    for name, m in methods.items():
        if "grads" in names[name]:
            seed_groups.setdefault(m.utility, []).append(name)
    class_names = [name for name in methods if set(names[name]) & set(CLASS_TERMS)]
    no_grad_names = [name for name in methods if "grads" not in names[name] and name not in class_names]
    need_graph = bool(seed_groups or class_names)
    out_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32

    lowest = min(positions)
    saved = {}
    with torch.set_grad_enabled(need_graph), autocast(images.device, amp_dtype):
        h = images.detach()
        if lowest == -1:
            h = h.clone().requires_grad_(need_graph)
            saved[-1] = h
        for j, op in enumerate(ops):
            # ops up to the lowest requested position need no graph: autograd stops there
            with torch.set_grad_enabled(need_graph and j > lowest):
                h = forward_op(op, h)
            if j == lowest and need_graph:
                h = h.detach().requires_grad_(True)
            if j in positions:
                saved[j] = h
        logits = h
    keys = sorted(saved)
    acts = {key: saved[key].detach().to(out_dtype) for key in keys}
    logits_out = logits.detach().to(out_dtype)
    maps: dict = {key: {} for key in keys}
    weights: dict = {key: {} for key in keys}

    def run(name, key, **available):
        m = methods[name]
        available.update(activations=acts[key], op=ops[key] if key >= 0 else None, position=key,
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
                grad = grad.to(out_dtype)
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
                    grad = grad.to(out_dtype)
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
class _Store:
    """Activations of a batch (no autograd): every op's output and every max-pool's argmax."""

    def __init__(self, x: torch.Tensor, outs: list, idx: dict):
        self.input, self.outs, self.idx = x, outs, idx
        self.logits = outs[-1]

    @staticmethod
    def forward(ops: list[Op], x: torch.Tensor, mm_dtype) -> "_Store":
        outs, idx, h = [], {}, x
        with torch.no_grad():
            for j, op in enumerate(ops):
                if op.kind == "maxpool":
                    h, idx[j] = forward_op(op, h, return_indices=True)
                else:
                    h = forward_op(op, h, mm_dtype=mm_dtype)
                outs.append(h)
        return _Store(x, outs, idx)

    def split(self, n: int) -> tuple["_Store", "_Store"]:
        """Rows [:n] and [n:] (views): images and baselines share one forward."""
        a = _Store(self.input[:n], [o[:n] for o in self.outs], {j: i[:n] for j, i in self.idx.items()})
        b = _Store(self.input[n:], [o[n:] for o in self.outs], {j: i[n:] for j, i in self.idx.items()})
        return a, b

    def before(self, j: int) -> torch.Tensor:
        return self.outs[j - 1] if j > 0 else self.input


def _unpool(op: Op, values: torch.Tensor, indices: torch.Tensor, in_shape) -> torch.Tensor:
    m = op.module
    return F.max_unpool2d(values, indices, m.kernel_size, m.stride, m.padding, output_size=list(in_shape[-2:]))


class DeepLiftPlan:
    """Which tensors one backward must produce, from the requested sites.

    Sites: ("out", p) = map at position p (output of features[p], -1 = model input);
    ("in", j) = captum's attribute_to_layer_input map of a nonlinear features[j].
    """

    def __init__(self, ops: list[Op], n_features: int, sites: set):
        self.sites = sites
        # lowest op the backward must process
        self.stop = min(p + 1 if kind == "out" else p for kind, p in sites)
        q_needed = set()
        for j in range(self.stop, n_features):
            if ops[j].kind != "maxpool":
                continue
            below = ops[j - 1].kind if j > 0 else None
            # the MaxPool multiplier is consumed by a map at its input, or flows further down
            # (a following ReLU's rule uses the recorded plain gradient instead, see module doc)
            if ("out", j - 1) in sites or ("in", j - 1) in sites or (j - 1 >= self.stop and below != "relu"):
                q_needed.add(j)
        self.q_needed = q_needed
        self.r_from = min(q_needed) if q_needed else len(ops)  # reference-half grads needed at outputs of ops >= r_from


def deeplift_pass(ops: list[Op], n_features: int, images, targets, baselines, sites: set, fns: dict,
                  *, max_pairs: int, n_classes: int, amp_dtype: torch.dtype | None = None):
    """DeepLift-family maps at `sites` for every method in `fns` ({name: fn(delta, multiplier)}).

    Pairs are processed in chunks of at most `max_pairs` (image, baseline) pairs; each chunk holds the
    activations of its own images and baselines only, so peak memory is bounded by `max_pairs`.
    `amp_dtype` (bf16 / float16) runs the convolutions and matmuls of the forward and backward in that dtype
    (as autocast would); the DeepLift rules and the sums over pairs stay in the images' dtype.
    Returns ({site: {name: (B, H, W)}} averaged over baselines, logits (B, n_classes)).
    """
    plan = DeepLiftPlan(ops, n_features, sites)
    mm = amp_dtype
    B, K = images.shape[0], baselines.shape[0]
    sums: dict = {site: {name: None for name in fns} for site in sites}
    logits = torch.empty((B, n_classes), dtype=images.dtype, device=images.device)

    def run_chunk(xs: _Store, bs: _Store, i0: int):
        with torch.no_grad():  # a hand-written backward: nothing here needs autograd
            contribs = _backward_chunk(ops, n_features, plan, xs, bs, targets[i0:i0 + xs.input.shape[0]], fns,
                                       n_classes, mm)
        for site, per_name in contribs.items():
            for name, c in per_name.items():
                acc = sums[site][name]
                if acc is None:
                    acc = sums[site][name] = torch.zeros((B,) + tuple(c.shape[1:]), dtype=c.dtype, device=c.device)
                acc[i0:i0 + c.shape[0]] += c

    if K <= max_pairs:
        group = max(1, max_pairs // K)  # images per chunk; images + baselines held: <= max_pairs + 1 rows
        if B <= group:  # a single chunk: images and baselines share one forward
            xs, bs = _Store.forward(ops, torch.cat([images, baselines]), mm).split(B)
        else:  # separate, so that no chunk's images outlive it (split views would keep them)
            bs = _Store.forward(ops, baselines, mm)
        for i0 in range(0, B, group):
            x = images[i0:i0 + group]
            if B > group:
                xs = _Store.forward(ops, x, mm)
            logits[i0:i0 + x.shape[0]] = xs.logits
            run_chunk(xs, bs, i0)
            if B > group:
                del xs  # freed before the next chunk's forward
    else:  # more baselines than pairs allowed: one image at a time, baselines in slices
        for i0 in range(B):
            xs = _Store.forward(ops, images[i0:i0 + 1], mm)
            logits[i0:i0 + 1] = xs.logits
            for k0 in range(0, K, max_pairs):
                run_chunk(xs, _Store.forward(ops, baselines[k0:k0 + max_pairs], mm), i0)
    maps = {site: {name: acc / K for name, acc in per_name.items()} for site, per_name in sums.items()}
    return maps, logits


def _relu_rule(g, recorded, dx, dy, masks, s_below, want_gin):
    """captum's `nonlinear` rule on the halves kept below; returns (multipliers, plain gradient or None)."""
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


def _maxpool_rule(op, g, recorded, dx, out_x, out_b, idx_x, idx_b, in_shape, s_below, with_q, flat, unflat):
    """captum's `maxpool` rule; returns (multipliers, plain gradient) for the halves kept below.

    out_x (G, 1, ...), out_b (1, Hb, ...): pooled image / baseline; idx_*: their argmaxes, same shapes.
    """
    G, Hb = dx.shape[:2]
    halves = 2 if with_q else s_below
    idx = torch.empty((halves, G, Hb) + tuple(idx_x.shape[2:]), dtype=idx_x.dtype, device=dx.device)
    idx[0] = idx_x  # argmax of each half, per pair (half-major like g)
    if halves == 2:
        idx[1] = idx_b
    idx = flat(idx)
    gin = unflat(_unpool(op, flat(g[:s_below]), idx[:s_below * G * Hb], in_shape), s_below)
    if not with_q:  # nobody consumes the MaxPool multiplier: only its eps branch (= plain gradient) matters
        return gin, gin
    go = recorded if recorded is not None else g  # both halves (S == 2 here)
    xmax = torch.maximum(out_x, out_b)
    coef = torch.stack([xmax - out_b, out_x - xmax])
    u = unflat(_unpool(op, flat(coef.mul_(go)), idx, in_shape), 2)
    q = torch.add(u[0], u[1], out=u[0]).div_(dx)
    return torch.where(dx.abs() < EPS, gin, q), gin


def _backward_chunk(ops, n_features, plan: DeepLiftPlan, xs: _Store, bs: _Store, targets, fns, n_classes, mm):
    """One DeepLift backward for the G x Hb pairs of a chunk; returns per-site maps summed over baselines.

    Gradients are (S, G, Hb, ...): S = 2 stacks captum's input half [0] and reference half [1] (one
    weight read per linear op for both), S = 1 once no MaxPool below needs the reference half.
    Image-side and baseline-side activations broadcast over (G, Hb) instead of being copied per pair.
    Each rule runs in its own function so that its temporaries are freed before the next op.
    """
    G, Hb = xs.input.shape[0], bs.input.shape[0]
    deltas: dict = {}

    def delta(p):  # a_p(x) - a_p(b) per pair, cached: a position feeds up to two rules and one map
        d = deltas.get(p)
        if d is None:
            tx, tb = (xs.outs[p], bs.outs[p]) if p >= 0 else (xs.input, bs.input)
            d = deltas[p] = tx[:, None] - tb[None]
        return d

    def flat(t):  # (S, G, Hb, ...) -> (S*G*Hb, ...)
        return t.reshape((-1,) + tuple(t.shape[3:]))

    def unflat(t, s):
        return t.reshape((s, G, Hb) + tuple(t.shape[1:]))

    out = {}

    def record(site, d, mult):
        out[site] = {name: fn(d, mult).sum(dim=1) for name, fn in fns.items()}

    S = 2 if plan.r_from < len(ops) else 1
    # both halves start from the target logit (captum selects the target in both halves)
    g = F.one_hot(targets, n_classes).to(xs.logits.dtype)[None, :, None].expand(S, G, Hb, n_classes)
    recorded = None  # plain grads recorded by a nonlinear module directly below a nonlinear one
    for j in range(len(ops) - 1, plan.stop - 2, -1):
        if j < n_features and ("out", j) in plan.sites:
            record(("out", j), delta(j), g[0])
        if j < plan.stop:
            break
        op = ops[j]
        in_shape = xs.before(j).shape
        s_below = 2 if (S == 2 and j - 1 >= plan.r_from) else 1
        below_nonlinear = j > 0 and ops[j - 1].kind in NONLINEAR
        if op.kind not in NONLINEAR:
            g = unflat(linear_backward(op, flat(g[:s_below]), in_shape, mm), s_below)
            recorded = None
        elif op.kind == "relu":
            masks = ((xs.outs[j] > 0)[:, None], (bs.outs[j] > 0)[None])  # relu' of each half
            want_gin = ("in", j) in plan.sites or below_nonlinear
            g, gin = _relu_rule(g, recorded, delta(j - 1), delta(j), masks, s_below, want_gin)
        else:
            g, gin = _maxpool_rule(op, g, recorded, delta(j - 1), xs.outs[j][:, None], bs.outs[j][None],
                                   xs.idx[j][:, None], bs.idx[j][None], in_shape, s_below,
                                   j in plan.q_needed, flat, unflat)
        if op.kind in NONLINEAR:
            if ("in", j) in plan.sites:
                record(("in", j), delta(j - 1), gin[0])
            recorded = gin if below_nonlinear else None
            del gin
        deltas.pop(j, None)  # its map and both rules that read it are done
        S = s_below
    return out
