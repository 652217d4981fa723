"""HiResCAM as in pytorch_grad_cam/hirescam.py: sum over channels of grads * A (no spatial averaging)."""
from ..registry import register


@register("hirescam", "gradient", "pytorch_grad_cam.HiResCAM")
def hirescam(activations, grads):
    return (grads * activations).sum(dim=1)
