"""XGrad-CAM as in pytorch_grad_cam/xgrad_cam.py: w_c = sum_hw(g * A) / (sum_hw(A) + 1e-7)."""
from ..registry import register
from ._cam import weighted_channel_sum


@register("xgradcam", "gradient", "pytorch_grad_cam.XGradCAM", weights=True)
def xgradcam(activations, grads):
    sum_activations = activations.sum(dim=(2, 3))
    weights = (grads * activations).sum(dim=(2, 3)) / (sum_activations + 1e-7)
    return weighted_channel_sum(weights, activations), weights
