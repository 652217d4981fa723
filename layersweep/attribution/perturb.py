"""The passes of the LIFT-CAM and perturbation methods: layer groups, per-crop seeds, tail evaluators.

Layer groups: a node that is not a ReLU / MaxPool (a conv, a BatchNorm, a sum, the model input) starts a
group, and a ReLU / MaxPool joins the group of its input when it is that tensor's only consumer. Zeroing a
channel (or a spatial position) commutes with ReLU and MaxPool (both channel-wise, both map 0 to 0), so
within a group
- AblationCAM's and SHAP-CAM|Pi|'s channel games are the same game: they are played once per group, at its
  top (the last, smallest tensor: the cheapest tail), and
- LIFT-CAM's zero reference at the group's first node is zero at every node of the group: one DeepLift
  backward serves the group.
A BatchNorm maps 0 to its shift, so it starts a new group instead of joining its conv's. Where the tensor has
other consumers (the input of a ResNet block feeds the residual add too), zeroing it is a different game, so
the ReLU starts its own group.

Tails: the network after a node is its descendants in the graph. They are recomputed from the perturbed
value; every other node is read from the clean forward of the same image (a ResNet block's skip branch).

Seeds: a crop's generator is seeded from (config seed, crop id, method, group), never from its row in a
batch, so a shard's values do not depend on the batch size or on the other crops of the shard.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from .graph import Graph
from .layouts import from_grid, to_grid
from .passes import DeepLiftPlan, Store, backward_chunk

GROUP_MEMBERS = ("relu", "maxpool")  # channel-wise kinds that map 0 to 0: they join the group below them


def layer_groups(graph: Graph) -> dict[int, tuple[int, int]]:
    """{node: (first, top)}: the first and last node of the node's group."""
    first: dict = {}
    for node in graph.nodes:
        j = node.inputs[0] if node.inputs else None
        joins = node.kind in GROUP_MEMBERS and j is not None and graph.sole_consumer(j) == node.index
        first[node.index] = first[j] if joins else node.index
    top: dict = {}
    for node in reversed(graph.nodes):
        c = graph.sole_consumer(node.index)
        top[node.index] = top[c] if c is not None and first.get(c) == first[node.index] and c != node.index else node.index
    return {i: (first[i], top[i]) for i in first}


def crop_seed(seed: int, crop_id, method: str, group: int) -> int:
    """A 63-bit seed from (config seed, crop id, method, layer group): stable across runs and batchings."""
    digest = hashlib.sha256(f"{int(seed)}/{crop_id}/{method}/{int(group)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Tails:
    """Logits of the network after a node, fed perturbed values of one image, in row chunks."""

    def __init__(self, graph: Graph, store: Store, rows: int, mm_dtype=None):
        self.graph, self.store, self.rows, self.mm = graph, store, rows, mm_dtype

    def logits_after(self, node: int, h: torch.Tensor, image: int) -> torch.Tensor:
        """All logits (R, K) for rows h (R, ...) as the output of `node`, image `image` elsewhere."""
        outs = []
        with torch.no_grad():
            for s in range(0, h.shape[0], self.rows):
                z = h[s:s + self.rows]
                base = self._base(image, z.shape[0])
                logits, _ = self.graph.run_from(node, z, base, mm_dtype=self.mm)
                outs.append(logits)
        return torch.cat(outs)

    def _base(self, image: int, r: int):
        store = self.store

        def base(index):
            v = store.values[index]
            if store.per_row(index):
                return v[image:image + 1].expand((r,) + tuple(v.shape[1:]))
            return v
        return base


class PerturbContext:
    """What a "perturb" method sees at one (site, batch); see registry.py.

    Attributes: activations (B, C, H, W) at the map's node; top_activations at the group's top; logits
    (B, K); targets (B,); images (B, 3, H, W); node (graph node of the map) and top (of its group); position
    (the site index, -1 = input); group (the key of the group's game, for seeds); rows (perturbed rows per
    forward, `attribution.perturb_batch`); options (dict).
    """

    def __init__(self, *, store: Store, images, targets, node, position, group, top, options, method,
                 seed, crop_ids, tails: Tails, cache: dict, layouts: dict | None = None):
        self.store = store
        self.layouts = layouts or {}  # {node: layout}: activations on the (C, h, w) grid, rows written back
        self.images, self.targets, self.logits = images, targets, store.logits
        self.node, self.position, self.group, self.top = node, position, group, top
        self.options, self.method = options, method
        self.rows = tails.rows
        self.seed, self.crop_ids, self.tails = seed, crop_ids, tails
        self.cache = cache

    def _layout(self, node: int) -> str:
        return self.layouts.get(node, "nchw")

    @property
    def activations(self):
        return to_grid(self._layout(self.node), self.store[self.node])

    @property
    def top_activations(self):
        return to_grid(self._layout(self.top), self.store[self.top])

    @property
    def target_logits(self) -> torch.Tensor:
        return self.logits.gather(1, self.targets[:, None])[:, 0]

    def generator(self, i: int, group: int | None = None) -> torch.Generator:
        """CPU generator of crop i for this method and group (as captum draws its orderings on the CPU).

        `group`: the key of the game (default the layer group; a method whose game differs per site passes
        its position)."""
        group = self.group if group is None else group
        return torch.Generator().manual_seed(crop_seed(self.seed, self.crop_ids[i], self.method, group))

    def logits_after(self, rows: torch.Tensor, image: int, at: int | None = None) -> torch.Tensor:
        """All logits (R, K) of rows fed to the network as node `at`'s output (default: the group's top),
        every other tensor the clean one of image `image`. Rows are on the (C, h, w) grid; a token site gets
        them written back with the image's own class token."""
        at = self.top if at is None else at
        if self._layout(at) != "nchw":
            rows = from_grid(self._layout(at), rows, self.store[at][image:image + 1])
        return self.tails.logits_after(at, rows, image)

    def tail(self, rows: torch.Tensor, target: int, image: int, at: int | None = None) -> torch.Tensor:
        """Target logit (R,) of rows fed to the network as node `at`'s output (default: the group's top)."""
        return self.logits_after(rows, image, at)[:, int(target)]

    def full_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """All logits (R, K) of full-network forwards of input rows."""
        return self.tails.logits_after(0, rows, 0)

    def full(self, rows: torch.Tensor, target: int) -> torch.Tensor:
        """Target logit (R,) of full-network forwards of input rows."""
        return self.full_logits(rows)[:, int(target)]

    def shared(self, compute):
        """compute(self) once per (method, group, batch): the result is reused at the group's other sites."""
        if self.group not in self.cache:
            self.cache[self.group] = compute(self)
        return self.cache[self.group]


def group_key(first: int, position_of: dict) -> int:
    """The seed key of a group: the site index of its first node (as the VGG layer index always was)."""
    return position_of.get(first, 10**6 + first)


def perturb_pass(graph: Graph, images, targets, nodes: dict, methods: dict, *, options: dict,
                 seed: int, crop_ids, perturb_batch: int, mm_dtype=None, position_of: dict,
                 layouts: dict | None = None):
    """Maps (and weights) of every "perturb" method at `nodes` ({node: position}); returns
    ({node: {name: map}}, {node: {name: w}}, logits)."""
    store = Store.forward(graph, images, mm_dtype)
    groups = layer_groups(graph)
    tails = Tails(graph, store, perturb_batch, mm_dtype)
    maps = {n: {} for n in nodes}
    weights = {n: {} for n in nodes}
    for name, m in methods.items():
        cache: dict = {}
        for n in sorted(nodes):
            first, top = groups[n]
            ctx = PerturbContext(store=store, images=images, targets=targets, node=n, position=nodes[n],
                                 group=group_key(first, position_of), top=top, options=options[name], method=name,
                                 seed=seed, crop_ids=crop_ids, tails=tails, cache=cache, layouts=layouts)
            out = m.fn(ctx)
            if m.weights:
                out, weights[n][name] = out
            maps[n][name] = out
    return maps, weights, store.logits


def zero_reference(graph: Graph, store: Store, first: int, mm_dtype=None, layout: str = "nchw") -> Store:
    """The network run from a zero tensor at node `first`, per image (every other tensor the image's own).
    On a token site only the patch grid is zeroed: the class token keeps the image's value."""
    value = torch.zeros_like(store[first])
    if layout != "nchw":
        value = from_grid(layout, torch.zeros_like(to_grid(layout, store[first])), store[first])
    logits, values = graph.run_from(first, value, lambda i: store.values[i], mm_dtype=mm_dtype,
                                    maxpool_indices=True, keep_all=True)
    merged = dict(store.values)
    merged.update(values)
    return Store(merged, logits, store.n, store.batch)


def deeplift0_pass(graph: Graph, images, targets, nodes: dict, fns: dict, *, n_classes: int,
                   max_pairs: int, mm_dtype=None, layouts: dict | None = None):
    """LIFT-CAM family: DeepLift contributions with the reference 0 at the site, one backward per group.

    Equals captum `DeepLift(tail).attribute(A, baselines=zeros_like(A), target)` with tail = the network
    after the site (the other inputs of the tail, such as a skip branch, held at the image's own values).
    Images are processed in chunks of `max_pairs`. Returns ({node: {name: map}}, {node: {name: weights}}, logits).
    """
    store = Store.forward(graph, images, mm_dtype)
    groups = layer_groups(graph)
    by_group: dict = {}
    for n in nodes:
        by_group.setdefault(groups[n][0], set()).add(n)
    contrib = {"contributions": lambda delta, multiplier: delta * multiplier}
    maps = {n: {} for n in nodes}
    weights = {n: {} for n in nodes}
    B = images.shape[0]
    layouts = layouts or {}
    for first, members in sorted(by_group.items()):
        ref = zero_reference(graph, store, first, mm_dtype, layouts.get(first, "nchw"))
        plan = DeepLiftPlan(graph, {("out", n) for n in members}, allowed=graph.descendants(first))
        parts: dict = {n: [] for n in members}
        for i0 in range(0, B, max_pairs):
            rows = slice(i0, i0 + max_pairs)
            with torch.no_grad():
                out = backward_chunk(graph, plan, store.rows(rows), ref.rows(rows), targets[rows], contrib,
                                     n_classes, mm_dtype, paired=True, layouts=layouts)
            for n in members:
                parts[n].append(out[("out", n)]["contributions"])
        for n in members:
            c = torch.cat(parts[n])
            for name, fn in fns.items():
                maps[n][name], weights[n][name] = fn(to_grid(layouts.get(n, "nchw"), store[n]), c)
    return maps, weights, store.logits


def masked_rows(acts: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """acts (C, H, W) times a channel mask keep (R, C) -> (R, C, H, W)."""
    return acts[None] * keep[:, :, None, None].to(acts.dtype)


def upsample_to(maps: torch.Tensor, size) -> torch.Tensor:
    """(R, C, h, w) -> (R, C, H, W), bilinear with align_corners=True (pytorch-grad-cam's UpsamplingBilinear2d)."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=True)
