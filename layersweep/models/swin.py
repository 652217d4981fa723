"""torchvision's Swin Transformers (v1 and v2). Feature maps are channels-last (B, H, W, C) from the patch
embedding on (layout `channels_last`: permuted to (B, C, H, W)).

`features.0` is the patch embedding, `features.{1,3,5,7}` the stages of Swin blocks, `features.{2,4,6}` the
patch-merging layers. Sites: the output of the patch embedding, of every block and of every patch merging.
A block is `features.k.i`, a stage `features.k` (its last block's output). GELU, LayerNorm and window
attention have no DeepLift rule in captum (plain gradient).
"""
from ..archs import FAMILIES
from . import Adapter, children_of


def _stages(model):
    return [p for i, p in enumerate(children_of(model, "features")) if i % 2 == 1]


def _blocks(model):
    return [b for s in _stages(model) for b in children_of(model, s)]


def _sites(model):
    out = []
    for i, path in enumerate(children_of(model, "features")):
        out.extend(children_of(model, path) if i % 2 == 1 else [path])
    return out


ADAPTER = Adapter("swin", FAMILIES["swin"], head="head", roots=("features",),
                  blocks=_blocks, stages=_stages, sites=_sites, layout="channels_last")
