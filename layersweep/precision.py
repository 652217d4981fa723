"""Arithmetic precision of the model's forwards: `attribution.precision` and `metrics.precision`.

float32 (default) runs the model exactly as before (no autocast, default memory format), so float32 results
are bit-identical and library parity stays exact. bf16 and float16 run convolutions and matmuls under
`torch.autocast` (on CUDA; on the CPU too: bf16 is native with AVX-512 BF16 / AMX, float16 runs but is no
faster there, see README "On a GPU workstation"). With a reduced precision the model and its inputs also
go channels_last where that is faster (measured: CUDA tensor cores and oneDNN's bf16 kernels both want it;
oneDNN's float16 path is slower with it).

What stays float32 whatever the setting: everything after the logits and everything about maps (softmax,
min-max normalisation, ranks, AUCs, the rescaling root finder). `logits()` hands back float32 logits.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from .errors import LayersweepError

PRECISIONS = ("float32", "bf16", "float16")
_DTYPES = {"float32": None, "bf16": torch.bfloat16, "float16": torch.float16}


def check_precision(value, key: str = "precision") -> str:
    """The precision name, or one sentence naming the config key."""
    if value not in PRECISIONS:
        raise LayersweepError(f"config key '{key}' is {value!r}; use one of {', '.join(PRECISIONS)}.")
    return value


def amp_dtype(precision: str, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype of `precision` on `device` (None = plain float32)."""
    dtype = _DTYPES[check_precision(precision, key)]
    if dtype is torch.float16 and torch.device(device).type == "cpu":
        warnings.warn(f"{key}: float16 on the CPU runs under autocast but is no faster than float32 there "
                      "(it is a GPU precision); bf16 is the CPU's fast precision.", stacklevel=2)
    return dtype


def wants_channels_last(dtype: torch.dtype | None, device: torch.device) -> bool:
    """channels_last where it is faster (README's measurements): reduced precision on CUDA, bf16 on the CPU.
    float32 keeps the default layout so that its results stay bit-identical to the plain model's."""
    if dtype is None:
        return False
    return torch.device(device).type == "cuda" or dtype is torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for a reduced dtype, a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class PrecisionModel(nn.Module):
    """`model` run under autocast (and channels_last where faster); returns float32 logits."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool):
        super().__init__()
        self.model, self.dtype, self.channels_last = model, dtype, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.model(x).float()


@contextlib.contextmanager
def precision_model(model: nn.Module, device, precision: str, key: str = "metrics.precision"):
    """The model to score with in `precision`: the model itself for float32, else a `PrecisionModel`.

    channels_last weights are restored to the default layout on exit (oneDNN picks channels_last kernels
    when the weight alone is channels_last, which would change later float32 results).
    """
    device = torch.device(device)
    dtype = amp_dtype(precision, device, key)
    if dtype is None:
        yield model
        return
    cl = wants_channels_last(dtype, device)
    if cl:
        model.to(memory_format=torch.channels_last)
    try:
        yield PrecisionModel(model, dtype, cl)
    finally:
        if cl:
            model.to(memory_format=torch.contiguous_format)
