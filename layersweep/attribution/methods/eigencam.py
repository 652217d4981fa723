"""EigenCAM as in pytorch_grad_cam/eigen_cam.py: the activations' first principal component (class-agnostic).

No gradients: the pass runs no backward for it. numpy SVD per image on the CPU, for the library's sign
(see `_cam.first_component_projection`).
"""
from .. import work
from ..registry import register
from ._cam import first_component_projection


@register("eigencam", "gradient", "pytorch_grad_cam.EigenCAM", cost=work.svd_of_layer)
def eigencam(activations):
    return first_component_projection(activations)
