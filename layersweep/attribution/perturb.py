"""The passes of the LIFT-CAM and perturbation methods: layer groups, per-crop seeds, tail evaluators.

Layer groups: a layer that is not a ReLU / MaxPool (a conv, a BatchNorm, the model input) starts a group,
and the ReLUs / MaxPools right after it join it. Zeroing a channel (or a spatial position) commutes with
ReLU and MaxPool (both channel-wise, both map 0 to 0), so within a group
- AblationCAM's and SHAP-CAM|Pi|'s channel games are the same game (docs/methods.md, layer groups): they are played
  once per group, at its top (the last, smallest tensor: the cheapest tail), and
- LIFT-CAM's zero reference at the group's first layer is zero at every layer of the group: one
  DeepLift backward serves the group.
A BatchNorm maps 0 to its shift, so it starts a new group instead of joining its conv's.

Seeds: a crop's generator is seeded from (config seed, crop id, method, group), never from its row in a
batch, so a shard's values do not depend on the batch size or on the other crops of the shard.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from .network import Op, forward_op
from .passes import DeepLiftPlan, _backward_chunk, _Store

GROUP_MEMBERS = ("relu", "maxpool")  # channel-wise ops that map 0 to 0: they join the group below them


def layer_groups(ops: list[Op], n_features: int) -> dict[int, tuple[int, int]]:
    """{position: (first, top)} for positions -1..n_features-1: the group's first and last position."""
    first = {}
    for p in range(-1, n_features):
        first[p] = first[p - 1] if p >= 0 and ops[p].kind in GROUP_MEMBERS else p
    top = {}
    for p in range(n_features - 1, -2, -1):
        nxt = p + 1
        top[p] = top[nxt] if nxt < n_features and first[nxt] == first[p] else p
    return {p: (first[p], top[p]) for p in first}


def crop_seed(seed: int, crop_id, method: str, group: int) -> int:
    """A 63-bit seed from (config seed, crop id, method, layer group): stable across runs and batchings."""
    digest = hashlib.sha256(f"{int(seed)}/{crop_id}/{method}/{int(group)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _Evaluator:
    """Target logits of the network after a position, or of the whole network, in row chunks."""

    def __init__(self, ops: list[Op], rows: int, mm_dtype=None):
        self.ops, self.rows, self.mm = ops, rows, mm_dtype

    def after(self, position: int, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logit of `targets` (R,) for rows h (R, ...) fed to the ops after `position`; (R,)."""
        out = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
        with torch.no_grad():
            for s in range(0, h.shape[0], self.rows):
                z = h[s:s + self.rows]
                for op in self.ops[position + 1:]:
                    z = forward_op(op, z, mm_dtype=self.mm)
                out[s:s + z.shape[0]] = z.gather(1, targets[s:s + self.rows, None])[:, 0]
        return out

    def logits_after(self, position: int, h: torch.Tensor) -> torch.Tensor:
        """All logits (R, K) for rows h fed to the ops after `position`."""
        outs = []
        with torch.no_grad():
            for s in range(0, h.shape[0], self.rows):
                z = h[s:s + self.rows]
                for op in self.ops[position + 1:]:
                    z = forward_op(op, z, mm_dtype=self.mm)
                outs.append(z)
        return torch.cat(outs)


class PerturbContext:
    """What a "perturb" method sees at one (layer, batch); see registry.py.

    Attributes: activations (B, C, H, W) at the map's position; top_activations at the group's top; logits
    (B, K); targets (B,); images (B, 3, H, W); position; op; group (first position); top; options (dict).
    """

    def __init__(self, *, store: _Store, ops, images, targets, position, group, top, options, method,
                 seed, crop_ids, evaluator: _Evaluator, cache: dict):
        self.ops, self._store = ops, store
        self.images, self.targets, self.logits = images, targets, store.logits
        self.position, self.group, self.top = position, group, top
        self.op = ops[position] if position >= 0 else None
        self.options, self.method = options, method
        self._seed, self._crop_ids, self._eval = seed, crop_ids, evaluator
        self._cache = cache

    def acts(self, position: int) -> torch.Tensor:
        return self._store.outs[position] if position >= 0 else self._store.input

    @property
    def activations(self):
        return self.acts(self.position)

    @property
    def top_activations(self):
        return self.acts(self.top)

    @property
    def target_logits(self) -> torch.Tensor:
        return self.logits.gather(1, self.targets[:, None])[:, 0]

    def generator(self, i: int, group: int | None = None) -> torch.Generator:
        """CPU generator of crop i for this method and group (as captum draws its orderings on the CPU).

        `group`: the key of the game (default the layer group; a method whose game differs per layer passes
        its position)."""
        group = self.group if group is None else group
        return torch.Generator().manual_seed(crop_seed(self._seed, self._crop_ids[i], self.method, group))

    def tail(self, rows: torch.Tensor, target: int, position: int | None = None) -> torch.Tensor:
        """Target logit (R,) of rows fed to the network after `position` (default: the group's top)."""
        position = self.top if position is None else position
        t = torch.full((rows.shape[0],), int(target), dtype=torch.int64, device=rows.device)
        return self._eval.after(position, rows, t)

    def full(self, rows: torch.Tensor, target: int) -> torch.Tensor:
        """Target logit (R,) of full-network forwards of input rows."""
        return self.tail(rows, target, position=-1)

    def shared(self, compute):
        """compute(self) once per (method, group, batch): the result is reused at the group's other layers."""
        if self.group not in self._cache:
            self._cache[self.group] = compute(self)
        return self._cache[self.group]


def perturb_pass(ops, n_features, images, targets, positions: set, methods: dict, *, options: dict,
                 seed: int, crop_ids, perturb_batch: int, mm_dtype=None):
    """Maps (and weights) of every "perturb" method at `positions`; returns ({pos: {name: map}}, {pos: {name: w}})."""
    store = _Store.forward(ops, images, mm_dtype)
    groups = layer_groups(ops, n_features)
    evaluator = _Evaluator(ops, perturb_batch, mm_dtype)
    maps = {p: {} for p in positions}
    weights = {p: {} for p in positions}
    for name, m in methods.items():
        cache: dict = {}
        for p in sorted(positions):
            first, top = groups[p]
            ctx = PerturbContext(store=store, ops=ops, images=images, targets=targets, position=p, group=first,
                                 top=top, options=options[name], method=name, seed=seed, crop_ids=crop_ids,
                                 evaluator=evaluator, cache=cache)
            out = m.fn(ctx)
            if m.weights:
                out, weights[p][name] = out
            maps[p][name] = out
    return maps, weights, store.logits


def zero_reference(ops, store: _Store, first: int, mm_dtype=None) -> _Store:
    """A one-row store holding the network run from a zero tensor at position `first` (below it: unused)."""
    x0 = torch.zeros_like(store.input[:1]) if first == -1 else store.input[:1]
    outs, idx = [None] * len(ops), {}
    h = torch.zeros_like(store.outs[first][:1]) if first >= 0 else x0
    with torch.no_grad():
        for j in range(first, len(ops)):
            if j > first:
                if ops[j].kind == "maxpool":
                    h, idx[j] = forward_op(ops[j], h, return_indices=True)
                else:
                    h = forward_op(ops[j], h, mm_dtype=mm_dtype)
            if j >= 0:
                outs[j] = h
    return _Store(x0, outs, idx)


def deeplift0_pass(ops, n_features, images, targets, positions: set, fns: dict, *, n_classes: int,
                   max_pairs: int, mm_dtype=None):
    """LIFT-CAM family: DeepLift contributions with the reference 0 at the layer, one backward per group.

    Equals captum `DeepLift(tail).attribute(A, baselines=zeros_like(A), target)` with tail = the network
    after the layer (LIFT-CAM, eq. 7-8). Images are processed in chunks of `max_pairs`.
    Returns ({pos: {name: map}}, {pos: {name: weights}}, logits).
    """
    store = _Store.forward(ops, images, mm_dtype)
    groups = layer_groups(ops, n_features)
    by_group: dict = {}
    for p in positions:
        by_group.setdefault(groups[p][0], set()).add(p)
    contrib = {"contributions": lambda delta, multiplier: delta * multiplier}
    maps = {p: {} for p in positions}
    weights = {p: {} for p in positions}
    B = images.shape[0]
    for first, members in sorted(by_group.items()):
        ref = zero_reference(ops, store, first, mm_dtype)
        plan = DeepLiftPlan(ops, n_features, {("out", p) for p in members})
        parts: dict = {p: [] for p in members}
        for i0 in range(0, B, max_pairs):
            rows = slice(i0, i0 + max_pairs)
            xs = _Store(store.input[rows], [o[rows] for o in store.outs],
                        {j: i[rows] for j, i in store.idx.items()})
            with torch.no_grad():
                out = _backward_chunk(ops, n_features, plan, xs, ref, targets[rows], contrib, n_classes, mm_dtype)
            for p in members:
                parts[p].append(out[("out", p)]["contributions"])
        for p in members:
            c = torch.cat(parts[p])
            acts = store.outs[p] if p >= 0 else store.input
            for name, fn in fns.items():
                maps[p][name], weights[p][name] = fn(acts, c)
    return maps, weights, store.logits


def masked_rows(acts: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """acts (C, H, W) times a channel mask keep (R, C) -> (R, C, H, W)."""
    return acts[None] * keep[:, :, None, None].to(acts.dtype)


def upsample_to(maps: torch.Tensor, size) -> torch.Tensor:
    """(R, C, h, w) -> (R, C, H, W), bilinear with align_corners=True (pytorch-grad-cam's UpsamplingBilinear2d)."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=True)
