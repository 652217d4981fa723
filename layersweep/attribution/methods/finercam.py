"""FinerCAM as in pytorch_grad_cam/finer_cam.py with its default base method GradCAM: Grad-CAM of the
utility `FinerWeightedTarget` (utils/model_targets.py:118-142),

    u = sum_j p_j (z_m - alpha z_j) / (sum_j p_j + 1e-9),   p = softmax(z), alpha = 1,

where m is the crop's target class and j runs over the 3 other classes whose logits are nearest to z_m
(the library's default comparison_categories 1, 2, 3 of the classes sorted by |z - z_m|). The gradient
flows through p as in the library. The pass seeds its backward with du/dz, per crop.
"""
import torch

from ..registry import register
from ._cam import weighted_channel_sum

ALPHA = 1.0
N_COMPARED = 3


def finer_utility(logits, targets):
    with torch.no_grad():
        distance = (logits - logits.gather(1, targets[:, None])).abs()
        distance.scatter_(1, targets[:, None], float("inf"))  # the main class is not compared with itself
        nearest = distance.topk(N_COMPARED, dim=1, largest=False).indices
    main = logits.gather(1, targets[:, None])
    prob = torch.softmax(logits, dim=1).gather(1, nearest)
    return (prob * (main - ALPHA * logits.gather(1, nearest))).sum(dim=1) / (prob.sum(dim=1) + 1e-9)


@register("finercam", "gradient", "pytorch_grad_cam.FinerCAM (GradCAM, FinerWeightedTarget per crop)",
          weights=True, utility=finer_utility)
def finercam(activations, grads):
    weights = grads.mean(dim=(2, 3))
    return weighted_channel_sum(weights, activations), weights
