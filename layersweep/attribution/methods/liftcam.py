"""LIFT-CAM (Jung & Oh 2021, eq. 7-8): channel weights = DeepLift contributions with a zero layer reference.

alpha_k = sum_(i,j) C_(A_k(i,j)) of the target logit of the network after the layer, reference 0 at the
layer (captum `DeepLift(tail).attribute(A, baselines=0)`, summed over positions); map = ReLU(sum_k alpha_k A_k).
"""
from .. import work
from ..registry import register
from ._cam import weighted_channel_sum


@register("liftcam", "deeplift0", "LIFT-CAM (official code: captum.attr.DeepLift on the tail, zero reference)",
          weights=True, cost=work.grouped_deeplift_backward)
def liftcam(activations, contributions):
    alpha = contributions.sum(dim=(2, 3))
    return weighted_channel_sum(alpha, activations).clamp(min=0), alpha
