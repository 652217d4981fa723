"""Grad-CAM as in pytorch_grad_cam/grad_cam.py: channel weights = spatial mean of the gradients."""
from ..registry import register
from ._cam import weighted_channel_sum


@register("gradcam", "gradient", "pytorch_grad_cam.GradCAM", weights=True)
def gradcam(activations, grads):
    weights = grads.mean(dim=(2, 3))
    return weighted_channel_sum(weights, activations), weights
