"""torchvision's EfficientNets: `features.k` is a stage (stem, MBConv stages, head conv), `features.k.i`
a block. SiLU and the squeeze-excite gate have no DeepLift rule in captum (plain gradient)."""
from . import Adapter, children_of
from ..archs import FAMILIES


def _blocks(model):
    out = []
    for p in children_of(model, "features"):
        kids = children_of(model, p)
        is_stage = kids and all(type(model.get_submodule(k)).__name__ in ("MBConv", "FusedMBConv") for k in kids)
        out.extend(kids if is_stage else [p])
    return out


ADAPTER = Adapter("efficientnet", FAMILIES["efficientnet"],
                  head="classifier.1", roots=("features",), blocks=_blocks,
                  stages=lambda model: children_of(model, "features"))
