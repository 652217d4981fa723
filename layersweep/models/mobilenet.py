"""torchvision's MobileNets: sites are the nodes of `features`; each `features.i` is a block (an inverted
residual), and a stage is a run of blocks at one resolution (its last block is the stage output)."""
from . import Adapter, children_of
from ..archs import FAMILIES


def _stages(model):
    return _resolution_ends(model, children_of(model, "features"))


def _resolution_ends(model, paths):
    """The last path of each run of blocks whose stride is 1 (a stride-2 block starts a new run)."""
    import torch.nn as nn
    ends = []
    for i, p in enumerate(paths):
        nxt = paths[i + 1] if i + 1 < len(paths) else None
        if nxt is None:
            ends.append(p)
            continue
        strides = [m.stride for m in model.get_submodule(nxt).modules() if isinstance(m, nn.Conv2d)]
        if any(s != (1, 1) for s in strides):
            ends.append(p)
    return ends


ADAPTER = Adapter("mobilenet", FAMILIES["mobilenet"], head="classifier.-1",
                  roots=("features",), blocks=lambda model: children_of(model, "features"), stages=_stages)
