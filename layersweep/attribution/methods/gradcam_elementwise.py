"""GradCAMElementWise as in pytorch_grad_cam/grad_cam_elementwise.py: sum over channels of relu(grads * A)."""
from ..registry import register


@register("gradcam_elementwise", "gradient", "pytorch_grad_cam.GradCAMElementWise")
def gradcam_elementwise(activations, grads):
    return (grads * activations).clamp_(min=0).sum(dim=1)
