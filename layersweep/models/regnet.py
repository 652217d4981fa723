"""torchvision's RegNets: sites are the stem and `trunk_output`; a stage is `trunk_output.blockK`, a block
`trunk_output.blockK.block<K>-<i>`."""
from . import Adapter, children_of
from ..archs import FAMILIES


def _stages(model):
    return children_of(model, "trunk_output")


ADAPTER = Adapter("regnet", FAMILIES["regnet"], head="fc",
                  roots=("stem", "trunk_output"),
                  blocks=lambda model: [b for s in _stages(model) for b in children_of(model, s)],
                  stages=_stages)
