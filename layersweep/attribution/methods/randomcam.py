"""RandomCAM as in pytorch_grad_cam/random_cam.py: channel weights drawn from U(-1, 1), cam = sum_c w_c A_c.

A sanity baseline. The library draws fresh weights from numpy's global RNG on every call, so its maps
change from run to run and with the batch. Here the weights are a fixed draw per layer: numpy's
`RandomState(layer_seed(position)).uniform(-1, 1, C)`, the same for every crop. So the maps are
deterministic, independent of the batch size and of which crops share a batch, and equal to the
library's for one image after `np.random.seed(layer_seed(position))`.
"""
import zlib

import numpy as np
import torch

from ..registry import register
from ._cam import weighted_channel_sum


def layer_seed(position: int) -> int:
    """The numpy seed of the weights at a position (-1 = the model input)."""
    return zlib.crc32(f"randomcam/{position}".encode())


@register("randomcam", "gradient", "pytorch_grad_cam.RandomCAM (weights fixed per layer)", weights=True)
def randomcam(activations, *, position):
    b, c = activations.shape[:2]
    draw = np.random.RandomState(layer_seed(position)).uniform(-1, 1, size=c)
    weights = torch.as_tensor(draw, dtype=activations.dtype, device=activations.device).expand(b, c)
    return weighted_channel_sum(weights.contiguous(), activations), weights
