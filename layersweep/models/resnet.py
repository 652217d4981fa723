"""torchvision's ResNets: sites are every node of the stem and of layer1-4; a block is `layerK.i` (its
output is its last ReLU, `layerK.i.relu_1` or `relu_2`), a stage is `layerK`."""
from . import Adapter, children_of
from ..archs import FAMILIES

STAGES = ["layer1", "layer2", "layer3", "layer4"]

ADAPTER = Adapter("resnet", FAMILIES["resnet"], head="fc",
                  roots=("conv1", "bn1", "relu", "maxpool", *STAGES),
                  blocks=lambda model: [b for s in STAGES for b in children_of(model, s)],
                  stages=lambda model: list(STAGES))
