"""Grad-CAM++ as in pytorch_grad_cam/grad_cam_plusplus.py (eq. 19 of arXiv:1710.11063).

    aij = g^2 / (2 g^2 + sum_hw(A) g^3 + 1e-6),  aij = 0 where g == 0,
    w_c = sum_hw relu(g) * aij,  cam = sum_c w_c A_c
Written with in-place ops (these maps are computed at every layer of every batch). The library's
`where(g != 0, aij, 0)` is implied: where g == 0, relu(g) = 0 and aij = 0 / 1e-6 = 0.
"""
from ..registry import register
from ._cam import weighted_channel_sum


@register("gradcampp", "gradient", "pytorch_grad_cam.GradCAMPlusPlus", weights=True)
def gradcampp(activations, grads):
    sum_activations = activations.sum(dim=(2, 3), keepdim=True)
    grads_2 = grads * grads
    denominator = grads_2 * grads  # g^3
    denominator.mul_(sum_activations).add_(grads_2, alpha=2).add_(1e-6)  # the library's eps
    aij = grads_2.div_(denominator)
    weights = aij.mul_(grads.clamp(min=0)).sum(dim=(2, 3))
    return weighted_channel_sum(weights, activations), weights
