"""torchvision's VGGs (and TorchRay's VOC VGG16, built by layersweep.model): sites are the modules of
`features`, numbered as today (integer i is `features.i`); a block ends at each max-pool."""
from . import Adapter
from ..archs import FAMILIES


def _blocks(model):
    return [f"features.{i}" for i, m in enumerate(model.features) if type(m).__name__ == "MaxPool2d"]


ADAPTER = Adapter("vgg", FAMILIES["vgg"],
                  head="classifier.6", roots=("features",), blocks=_blocks, stages=_blocks)
