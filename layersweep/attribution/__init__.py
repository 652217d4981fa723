"""Per-layer attribution engine: every layer of a batch in one shared pass per method family.

    from layersweep.attribution import attribute_layers, available_methods
    maps = attribute_layers(model, images, targets, methods=["deepliftshap", "gradcampp"], layers=range(21),
                            baselines=baseline_images, attribute_to="output", max_pairs=64, precision="float32")
    # -> {method: {layer_index: Tensor (B, H_l, W_l) float32 on images.device}}

Methods live in `methods/`, one file each (see `registry.py`); shards in `shards.py`.
"""
from .engine import attribute_crops, attribute_layers
from .registry import available_methods, get_method, register
from .shards import AttributionShard, read_attribution_shard, write_attribution_shard

__all__ = [
    "AttributionShard",
    "attribute_layers",
    "attribute_crops",
    "available_methods",
    "get_method",
    "register",
    "read_attribution_shard",
    "write_attribution_shard",
]
