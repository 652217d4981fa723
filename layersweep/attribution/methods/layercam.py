"""LayerCAM as in pytorch_grad_cam/layer_cam.py: sum over channels of relu(grads) * A."""
from ..registry import register


@register("layercam", "gradient", "pytorch_grad_cam.LayerCAM")
def layercam(activations, grads):
    return grads.clamp(min=0).mul_(activations).sum(dim=1)
