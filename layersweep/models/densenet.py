"""torchvision's DenseNets: sites are the nodes of `features`; blocks are the dense layers and
transitions, stages the dense blocks. The final `F.relu` in `forward` is functional: captum's DeepLift
has no rule for it (plain gradient), and neither does layersweep."""
from . import Adapter, children_of
from ..archs import FAMILIES


def _stages(model):
    return [p for p in children_of(model, "features") if ".denseblock" in p or ".transition" in p]


def _blocks(model):
    out = []
    for p in _stages(model):
        out.extend(children_of(model, p) if ".denseblock" in p else [p])
    return out


ADAPTER = Adapter("densenet", FAMILIES["densenet"], head="classifier",
                  roots=("features",), blocks=_blocks, stages=_stages)
