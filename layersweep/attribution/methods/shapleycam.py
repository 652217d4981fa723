"""ShapleyCAM as in pytorch_grad_cam/shapley_cam.py with the ReST target, as its authors use it
(`ClassifierOutputReST`, u = z_c - CE(z, c) = 2 z_c - logsumexp z):

    w = mean_hw(grad - hvp / 2),  grad = du/dA,  hvp = (d^2u/dA^2) A,  cam = sum_c w_c A_c.

VGG is piecewise linear (autograd's second derivative of ReLU and max-pool is 0), so with G_k = dz_k/dA
(docs/methods.md, ShapleyCAM): grad = sum_k (du/dz)_k G_k and hvp = sum_k (H s)_k G_k, with H = d^2u/dz^2 and
s_k = <G_k, A>. So w = sum_k c_k mean_hw(G_k) with c = du/dz - H s / 2. The pass supplies s
(`class_sums`) and mean_hw(G_k) (`class_grad_means`) from one backward per class; du/dz and H s come from
autograd on the (B, K) logits.

With the plain logit target, u = z_c, H = 0 and ShapleyCAM is exactly Grad-CAM (`gradcam`); tested.
"""
import torch

from ..registry import register
from ._cam import weighted_channel_sum


def rest_utility(logits, targets):
    """pytorch-grad-cam's ClassifierOutputReST per crop: z_c - cross_entropy(z, c)."""
    return logits.gather(1, targets[:, None])[:, 0] - torch.nn.functional.cross_entropy(logits, targets, reduction="none")


@register("shapleycam", "gradient", "pytorch_grad_cam.ShapleyCAM with ClassifierOutputReST", weights=True,
          utility=rest_utility)
def shapleycam(activations, *, logits, targets, class_sums, class_grad_means):
    with torch.enable_grad():
        z = logits.detach().requires_grad_(True)
        (du,) = torch.autograd.grad(rest_utility(z, targets).sum(), z, create_graph=True)
        (h_s,) = torch.autograd.grad((du * class_sums).sum(), z)  # H s per crop (crops are independent)
    coeff = du.detach() - 0.5 * h_s
    weights = torch.bmm(coeff[:, None, :], class_grad_means)[:, 0]
    return weighted_channel_sum(weights, activations), weights
