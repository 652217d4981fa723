"""Sites: the named tensors of a network where maps are computed, and how a config names them.

A site is a graph node with a (B, C, H, W) output under one of its adapter's roots. Sites are numbered in
execution order, 0..n-1, and -1 is the model input. On a VGG the sites are exactly `features.0..n-1`, so
an integer layer i is `features.i` as it always was. A site can also be named by its node name
(`layer1.0.relu_1`, torchvision's `get_graph_node_names`), or by the module path of a block or stage
(`layer1.0` = that block's output, i.e. its last node). `attribution.layers` takes 'all', 'blocks',
'stages', or a list of any of these names and integers.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import LayersweepError
from .graph import Graph, trace

SITE_SETS = ("all", "blocks", "stages")
SHAPE_PROBE = 64  # input side of the shape probe: small, and every supported CNN reaches its head from it


@dataclass(frozen=True)
class Site:
    index: int                 # position in the table; -1 = the model input
    name: str                  # node name ("input" for -1)
    node: int                  # index of the node in the Graph
    kind: str                  # conv | batchnorm | relu | maxpool | add | cat | ... | input
    channels: int
    alias: str | None = None   # the block / stage module path whose output this site is
    layout: str = "nchw"       # how the node's tensor maps onto (C, h, w): nchw | tokens | channels_last

    @property
    def label(self) -> str:
        return self.alias or self.name


def family_of(model: nn.Module):
    """The adapter of a model object (by its class), or None for a model no adapter knows."""
    from ..models import ADAPTERS
    names = {"VGG": "vgg11", "ResNet": "resnet18", "DenseNet": "densenet121", "MobileNetV2": "mobilenet_v2",
             "MobileNetV3": "mobilenet_v3_large", "EfficientNet": "efficientnet_b0", "ConvNeXt": "convnext_tiny",
             "RegNet": "regnet_y_400mf", "VisionTransformer": "vit_b_16", "SwinTransformer": "swin_t"}
    arch = names.get(type(model).__name__)
    return ADAPTERS[arch] if arch else None


class SiteTable:
    def __init__(self, graph: Graph, sites: list[Site], blocks: list[str], stages: list[str]):
        self.graph = graph
        self.sites = sites
        self.input = Site(-1, "input", 0, "input", 3)
        self.by_name = {s.name: s.index for s in sites}
        self.aliases = {s.alias: s.index for s in sites if s.alias}
        self.blocks, self.stages = blocks, stages

    def __len__(self):
        return len(self.sites)

    def __getitem__(self, index: int) -> Site:
        return self.input if index == -1 else self.sites[index]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    def node_of(self, index: int) -> int:
        return self[index].node

    @property
    def layouts(self) -> dict:
        """{graph node: layout} of the sites whose tensor is not (B, C, H, W) (attribution/layouts.py)."""
        return {s.node: s.layout for s in self.sites if s.layout != "nchw"}

    def resolve(self, value, key: str = "attribution.layers") -> list[int]:
        """'all' | 'blocks' | 'stages' | a list of integers (-1 = input) and names -> sorted site indices."""
        if isinstance(value, str) and value in SITE_SETS:
            if value == "all":
                return list(range(len(self.sites)))
            paths = self.blocks if value == "blocks" else self.stages
            if not paths:
                raise LayersweepError(f"config key '{key}' is '{value}', but this model has no {value} declared by an adapter; name the sites instead.")
            return sorted({self.aliases[p] for p in paths})
        if isinstance(value, (str, int, np.integer)):
            value = [value]
        if not isinstance(value, Iterable) or isinstance(value, (bytes, dict)) or not list(value):
            raise LayersweepError(f"config key '{key}' must be 'all', 'blocks', 'stages' or a non-empty list of site names or indices, not {value!r}.")
        return sorted({self.index_of(item, key) for item in value})

    def index_of(self, item, key: str = "attribution.layers") -> int:
        n = len(self.sites)
        if isinstance(item, (bool, np.bool_)) or isinstance(item, float):
            raise LayersweepError(f"config key '{key}' names the layer {item!r}, which is neither a site name nor an integer index.")
        if isinstance(item, (int, np.integer)):
            if not -1 <= int(item) < n:
                raise LayersweepError(f"config key '{key}' names layer {int(item)} (outside -1..{n - 1}: the model has {n} sites; -1 is the model input).")
            return int(item)
        if isinstance(item, str):
            if item in self.by_name:
                return self.by_name[item]
            if item in self.aliases:
                return self.aliases[item]
            if item == "input":
                return -1
            near = difflib.get_close_matches(item, list(self.by_name) + list(self.aliases), n=3, cutoff=0.5)
            hint = f"; nearest: {', '.join(near)}" if near else f"; sites run from {self.sites[0].name} to {self.sites[-1].name}"
            raise LayersweepError(f"config key '{key}' names the layer {item!r}, which is not a site of this model{hint}.")
        raise LayersweepError(f"config key '{key}' names the layer {item!r}, which is neither a site name nor an integer index.")


def _under(name: str, roots) -> bool:
    return any(r == "" or name == r or name.startswith(r + ".") for r in roots)


def _shapes(graph: Graph) -> dict:
    """Output shape of every node for a (1, 3, 64, 64) input (a ViT's own `image_size`: it accepts no other),
    on the model's own device (meta: free)."""
    params = list(graph.model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    side = int(getattr(graph.model, "image_size", SHAPE_PROBE))
    x = torch.zeros((1, 3, side, side), device=device, dtype=dtype)
    with torch.no_grad():
        _, values = graph.run(x)
    return {i: tuple(v.shape) for i, v in values.items() if torch.is_tensor(v)}


_TABLES: dict = {}


def site_table(model: nn.Module) -> SiteTable:
    """The sites of a model (cached per traced graph)."""
    graph = trace(model)
    hit = _TABLES.get(id(graph))
    if hit is not None and hit[0] is graph:
        return hit[1]
    adapter = family_of(model)
    if adapter is not None:
        roots = adapter.roots
    else:
        roots = ("features",) if isinstance(getattr(model, "features", None), nn.Sequential) else ("",)
    shapes = _shapes(graph)
    layout = adapter.layout if adapter is not None else "nchw"
    ndim = 3 if layout == "tokens" else 4
    names: dict = {}
    if adapter is not None and adapter.sites is not None:  # transformers: the adapter names the sites
        chosen = sorted({_output_node(graph, path, shapes, ndim).index: None for path in adapter.sites(model)})
        chosen = [graph.nodes[i] for i in chosen]
        names = {n.index: n.module_path for n in chosen if n.fx_node.op == "call_module"}
    else:
        chosen = [node for node in graph.nodes if node.kind not in ("input", "output", "constant")
                  and len(shapes.get(node.index, ())) == 4 and _under(node.name, roots)]
    if not chosen:
        raise LayersweepError(f"the model {type(model).__name__} has no (B, C, H, W) node to attribute to under {', '.join(roots)}.")
    blocks = adapter.blocks(model) if adapter else []
    stages = adapter.stages(model) if adapter else []
    alias_of = {}
    for path in list(blocks) + list(stages):  # a module's output is its last node
        inside = [n for n in chosen if _under(n.name, (path,)) or n.module_path == path]
        if inside:
            alias_of.setdefault(inside[-1].index, path)
    if adapter is not None and adapter.sites is not None:  # a non-block site path (Swin's `features.2`) names its node
        for path in adapter.sites(model):
            node = _output_node(graph, path, shapes, ndim)
            if names.get(node.index, node.name) != path:
                alias_of.setdefault(node.index, path)
    channel_axis = 1 if layout == "nchw" else -1
    sites = [Site(i, names.get(n.index, n.name), n.index, n.kind, shapes[n.index][channel_axis], alias_of.get(n.index),
                  layout) for i, n in enumerate(chosen)]
    table = SiteTable(graph, sites, [], [])
    # a path that is both a block and a stage (VGG), or a stage ending in a block, names the site that first
    # took it as its alias: keep every path resolvable
    for path in list(blocks) + list(stages):
        inside = [s for s in sites if _under(s.name, (path,))]
        if inside:
            table.aliases.setdefault(path, inside[-1].index)
    table.blocks = [p for p in blocks if p in table.aliases]
    table.stages = [p for p in stages if p in table.aliases]
    if len(_TABLES) > 32:
        _TABLES.clear()
    _TABLES[id(graph)] = (graph, table)
    return table


def _output_node(graph: Graph, path: str, shapes: dict, ndim: int):
    """The node whose output is the module at `path`'s output: its (last) call if it is a leaf module, else the
    last node inside it with an output of `ndim` dimensions."""
    calls = [n for n in graph.nodes if n.fx_node.op == "call_module" and n.fx_node.target == path]
    inside = calls or [n for n in graph.nodes if _under(n.name, (path,)) and len(shapes.get(n.index, ())) == ndim]
    if not inside:
        raise LayersweepError(f"the adapter names the site {path!r}, which has no {ndim}-d output in the traced model.")
    return inside[-1]


def arch_site_table(arch: str, source: str = "torchvision") -> SiteTable:
    """The site table of `model.arch`, from the architecture on the meta device (no weights, no memory)."""
    from ..model import build_architecture
    try:
        with torch.device("meta"):
            model = build_architecture(arch, source).eval()
    except NotImplementedError:  # a builder that computes its widths with tensors (RegNet) cannot run on meta
        model = build_architecture(arch, source).eval()
    return site_table(model)
