"""FEM as in pytorch_grad_cam/fem.py (k = 2): w_c = share of positions where A_c > mean_hw(A_c) + 2 std_hw(A_c)
(population std), cam = sum_c w_c A_c. Class-agnostic and gradient-free: the pass runs no backward for it.
"""
import torch

from ..registry import register
from ._cam import weighted_channel_sum

K_SIGMA = 2  # the library's default k


@register("fem", "gradient", "pytorch_grad_cam.FEM", weights=True)
def fem(activations):
    std, mean = torch.std_mean(activations, dim=(2, 3), correction=0)
    threshold = (mean + K_SIGMA * std)[:, :, None, None]
    weights = (activations > threshold).to(activations.dtype).mean(dim=(2, 3))
    return weighted_channel_sum(weights, activations), weights
