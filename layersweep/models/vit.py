"""torchvision's Vision Transformers. The encoder's sequence is (B, N, C): token 0 is the class token, the rest
the patch grid (layout `tokens`: the class token is dropped and the patches reshaped to (B, C, h, w)).

Sites, per encoder block `encoder.layers.encoder_layer_i`: its input norm `ln_1` (named by its module path;
torchvision's node name for it is `...encoder_layer_i.ln`, and its node `...ln_1` is the module `ln_2`) and
the block's output. A block is `encoder.layers.encoder_layer_i`; there are no stages of a different
resolution, so the stages are the blocks. GELU, LayerNorm and attention have no DeepLift rule in captum
(plain gradient). `vit_tiny` (not a torchvision model) is a 2-block ViT of width 32 on 32-px inputs, built with
torchvision's VisionTransformer class, for the demo and the tests.
"""
from torchvision.models.vision_transformer import VisionTransformer

from ..archs import FAMILIES
from . import Adapter, children_of


def _blocks(model):
    return children_of(model, "encoder.layers")


def _sites(model):
    return [path for block in _blocks(model) for path in (f"{block}.ln_1", block)]


def vit_tiny(n_classes: int = 1000) -> VisionTransformer:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=n_classes)


ADAPTER = Adapter("vit", FAMILIES["vit"], head="heads.head", roots=("encoder.layers",),
                  blocks=_blocks, stages=_blocks, sites=_sites, layout="tokens", builders={"vit_tiny": vit_tiny})
