"""EigenGradCAM as in pytorch_grad_cam/eigen_grad_cam.py: first principal component of grads * A.

numpy SVD per image on the CPU, for the library's sign (see `_cam.first_component_projection`).
"""
from .. import work
from ..registry import register
from ._cam import first_component_projection


@register("eigengradcam", "gradient", "pytorch_grad_cam.EigenGradCAM", cost=work.svd_of_layer)
def eigengradcam(activations, grads):
    return first_component_projection(grads * activations)
