"""SegEigenCAM as in pytorch_grad_cam/seg_eigen_cam.py: first principal component of |grads| * A, its sign
chosen so that the larger magnitude is positive (`get_2d_projection_with_sign_correction`), per image.
"""
from .. import work
from ..registry import register
from ._cam import first_component_projection


@register("segeigencam", "gradient", "pytorch_grad_cam.SegEigenCAM", cost=work.svd_of_layer)
def segeigencam(activations, grads):
    proj = first_component_projection(grads.abs() * activations)
    flat = proj.flatten(1)
    flip = flat.min(dim=1).values.abs() > flat.max(dim=1).values.abs()
    return proj * (1 - 2 * flip.to(proj.dtype))[:, None, None]
