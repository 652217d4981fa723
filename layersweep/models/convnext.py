"""torchvision's ConvNeXts: `features.{1,3,5,7}` are the stages of CNBlocks, `features.{0,2,4,6}` the stem
and downsampling layers. Inside a block the tensor is channels-last between the permutes; the sites are
the (B, C, H, W) nodes. GELU and LayerNorm have no DeepLift rule in captum (plain gradient)."""
from . import Adapter, children_of
from ..archs import FAMILIES


def _stages(model):
    return [p for i, p in enumerate(children_of(model, "features")) if i % 2 == 1]


ADAPTER = Adapter("convnext", FAMILIES["convnext"], head="classifier.2",
                  roots=("features",),
                  blocks=lambda model: [b for s in _stages(model) for b in children_of(model, s)],
                  stages=_stages)
