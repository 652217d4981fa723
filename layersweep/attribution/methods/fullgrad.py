"""FullGrad's per-layer term, as pytorch_grad_cam/fullgrad_cam.py computes it for each biased layer:

    conv l:  sum_k s(|b_k * dz/dA_k|)   (A = the conv's output, before its ReLU; b = the conv's bias)
    BN l:    the same with b = beta - mu * gamma / sqrt(var + eps), the eval-mode BatchNorm's shift
    input:   sum_rgb s(|x * dz/dx|)

with s = per-(crop, channel) min-max, `(t - min) / (1e-7 + max(t - min))` (`scale_cam_image`). The library
ignores `target_layers` and returns one map: these terms, each resized to the input, summed. Here each term
stays at its layer's resolution (bilinear resizing is linear, so summing the resized terms gives the
library's map; tested). ReLU and max-pool outputs have no bias, so they have no term: the method is
declared for conv and BatchNorm layers and the input only, and the engine refuses other layers with one
sentence. A bias-free conv (ResNet's) has no term: its map is zero, as the library skips it.
"""
import torch

from ..registry import register


@register("fullgrad", "gradient", "pytorch_grad_cam.FullGrad, one bias term per layer",
          layer_kinds=("conv", "batchnorm", "input"))
def fullgrad(activations, grads, *, op):
    if op is None:  # the model input: FullGrad's input-gradient term
        term = (activations * grads).abs_()
    elif op.kind == "batchnorm":
        m = op.module
        shift = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
        term = (shift.detach().to(grads.dtype)[None, :, None, None] * grads).abs_()
    elif op.module.bias is None:  # the library skips bias-free layers: no term
        return torch.zeros_like(activations[:, 0])
    else:
        term = (op.module.bias.detach().to(grads.dtype)[None, :, None, None] * grads).abs_()
    term -= term.amin(dim=(2, 3), keepdim=True)
    term /= term.amax(dim=(2, 3), keepdim=True) + 1e-7
    return term.sum(dim=1)
