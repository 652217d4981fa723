"""A torchvision-VGG-shaped model as a flat list of ops, run functionally.

The engine never calls the caller's ReLU modules: it applies `F.relu` (never in place) and the
functional forms of Conv2d / MaxPool2d / Linear with the modules' own parameters. So the activation
of every layer is the module's *true* output even when the model was built with
`ReLU(inplace=True)` (torchvision's default, which overwrites a Conv2d's output with the next ReLU's),
and the caller's model is neither copied nor mutated, and none of its hooks fire.

Forward order is torchvision's `VGG.forward`: features -> avgpool -> flatten -> classifier.
Dropout is the identity (attribution is defined in eval mode), and BatchNorm2d (the `_bn` VGGs) in eval
mode is the per-channel affine map y = a * x + c with a = weight / sqrt(running_var + eps): a linear op
for every pass, as captum's DeepLift treats it (no rule of its own, plain gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayersweepError

NONLINEAR = ("relu", "maxpool")  # the modules on which DeepLift applies its own rules


@dataclass(frozen=True)
class Op:
    name: str                 # "features.3", "avgpool", "flatten", "classifier.0"
    kind: str                 # conv | batchnorm | relu | maxpool | linear | affine | flatten | identity
    module: nn.Module | None


def _feature_op(i: int, m: nn.Module) -> Op:
    name = f"features.{i}"
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise LayersweepError(f"model.{name} uses padding {m.padding!r} / padding_mode {m.padding_mode!r}; only numeric zero padding is supported.")
        return Op(name, "conv", m)
    if isinstance(m, nn.BatchNorm2d):
        if m.training or m.running_mean is None or m.running_var is None:
            raise LayersweepError(f"model.{name} is a BatchNorm2d in training mode or without running statistics; the attribution engine needs model.eval() (BatchNorm as a fixed affine map).")
        return Op(name, "batchnorm", m)
    if isinstance(m, nn.ReLU):
        return Op(name, "relu", m)
    if isinstance(m, nn.MaxPool2d):
        return Op(name, "maxpool", m)
    raise LayersweepError(f"model.{name} is a {type(m).__name__}; the attribution engine supports Conv2d, BatchNorm2d, ReLU and MaxPool2d in model.features.")


def batchnorm_scale(m: nn.BatchNorm2d) -> torch.Tensor:
    """a of the eval-mode map y = a * x + c, shape (C,): weight / sqrt(running_var + eps)."""
    scale = torch.rsqrt(m.running_var + m.eps)
    return scale if m.weight is None else m.weight * scale


def _head_op(name: str, m: nn.Module) -> Op:
    if isinstance(m, nn.Linear):
        return Op(name, "linear", m)
    if isinstance(m, nn.ReLU):
        return Op(name, "relu", m)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return Op(name, "identity", None)
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return Op(name, "affine", m)  # linear map: its vector-Jacobian product is the same everywhere
    raise LayersweepError(f"model.{name} is a {type(m).__name__}; the attribution engine supports Linear, ReLU, "
                          "Dropout and average pooling after model.features.")


def build_ops(model: nn.Module) -> tuple[list[Op], int]:
    """The model as a flat op list; returns (ops, n_features). ops[i] is model.features[i] for i < n_features."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) == 0:
        raise LayersweepError("the model has no non-empty nn.Sequential `features`; the attribution engine expects a torchvision-VGG-shaped model.")
    for key in ("avgpool", "classifier"):
        if not isinstance(getattr(model, key, None), nn.Module):
            raise LayersweepError(f"the model has no module `{key}`; the attribution engine expects a torchvision-VGG-shaped model.")
    ops = [_feature_op(i, m) for i, m in enumerate(features)]
    ops.append(_head_op("avgpool", model.avgpool))
    ops.append(Op("flatten", "flatten", None))
    classifier = model.classifier
    head = list(classifier.named_children()) if isinstance(classifier, nn.Sequential) else [("", classifier)]
    for sub, m in head:
        ops.append(_head_op(f"classifier.{sub}".rstrip("."), m))
    return ops, len(features)


def num_classes(ops: list[Op]) -> int:
    linears = [op.module for op in ops if op.kind == "linear"]
    if not linears:
        raise LayersweepError("model.classifier has no Linear layer, so its number of classes is unknown.")
    return int(linears[-1].out_features)


def forward_op(op: Op, x: torch.Tensor, *, return_indices: bool = False, mm_dtype: torch.dtype | None = None):
    """One op, functionally (never in place). MaxPool returns (output, indices) when asked.

    `mm_dtype` (bf16 / float16) runs conv / linear in that dtype and returns x's dtype, as autocast would.
    """
    m = op.module
    if op.kind in ("conv", "linear") and mm_dtype is not None:
        w = m.weight.to(mm_dtype)
        b = None if m.bias is None else m.bias.to(mm_dtype)
        xx = x.to(mm_dtype)
        out = F.conv2d(xx, w, b, m.stride, m.padding, m.dilation, m.groups) if op.kind == "conv" else F.linear(xx, w, b)
        return out.to(x.dtype)
    if op.kind == "conv":
        return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    if op.kind == "batchnorm":
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    if op.kind == "relu":
        return F.relu(x)
    if op.kind == "maxpool":
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices)
    if op.kind == "linear":
        return F.linear(x, m.weight, m.bias)
    if op.kind == "affine":
        return m(x)
    if op.kind == "flatten":
        return torch.flatten(x, 1)
    return x  # identity


def linear_backward(op: Op, g: torch.Tensor, in_shape: tuple[int, ...], mm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Vector-Jacobian product of a linear op (conv, batchnorm, linear, avg-pool, flatten, identity).

    It does not depend on the point, so no forward activations are needed. `mm_dtype` (bf16 / float16) runs
    the heavy products in that dtype and returns the input dtype, as autocast would.
    """
    m = op.module
    shape = (g.shape[0],) + tuple(in_shape[1:])
    if op.kind in ("conv", "linear"):
        w = m.weight.detach()
        gg = g
        if mm_dtype is not None:
            gg, w = g.to(mm_dtype), w.to(mm_dtype)
        if op.kind == "conv":
            out = torch.nn.grad.conv2d_input(shape, w, gg, m.stride, m.padding, m.dilation, m.groups)
        else:
            out = gg @ w
        return out.to(g.dtype)
    if op.kind == "batchnorm":
        return g * batchnorm_scale(m).detach().to(g.dtype).view(1, -1, 1, 1)
    if op.kind == "affine":
        with torch.enable_grad():
            z = torch.zeros(shape, dtype=g.dtype, device=g.device, requires_grad=True)
            return torch.autograd.grad(m(z), z, g)[0]
    if op.kind == "flatten":
        return g.reshape(shape)
    return g  # identity
