"""Arithmetic precision of the model's forwards: `attribution.precision` and `metrics.precision`.

float32 (default) runs the model exactly as before (no autocast, default memory format), so float32 results
are bit-identical and library parity stays exact. bf16 and float16 run convolutions and matmuls under
`torch.autocast` (on CUDA; on the CPU too: bf16 is native with AVX-512 BF16 / AMX and emulated, 3-5x slower
than float32, without them; float16 runs but is no faster there; docs/gpu-and-precision.md). A reduced
precision on a CPU where it is slow warns in one sentence and runs as asked: the setting decides the
arithmetic, this module never changes it behind the user's back. With a reduced precision the model and its inputs also
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


def cpu_bf16_support() -> tuple[str, bool]:
    """(torch's CPU capability, e.g. 'AVX2' or 'AVX512'; whether this CPU runs bf16 convolutions and matmuls
    natively). Native means AVX-512 BF16 or AMX, usable by oneDNN: without them oneDNN emulates bf16, and an
    AVX-512 CPU without the BF16 extension is as slow as an AVX2 one (measured: docs/gpu-and-precision.md)."""
    capability = torch.backends.cpu.get_cpu_capability()
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return capability, bool(native)


def amp_dtype(precision: str, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype of `precision` on `device` (None = plain float32).

    On the CPU a reduced precision that is slower than float32 there warns (one sentence) and still runs:
    float16 always, bf16 where the CPU has no native bf16 (`cpu_bf16_support`)."""
    dtype = _DTYPES[check_precision(precision, key)]
    if dtype is None or torch.device(device).type != "cpu":
        return dtype
    capability, native_bf16 = cpu_bf16_support()
    if dtype is torch.float16:
        fast = "bf16 is this CPU's fast reduced precision" if native_bf16 else \
            f"this CPU ({capability}) has no native bf16 either, so float32 is its fastest precision"
        warnings.warn(f"{key}: float16 on the CPU runs under autocast but is no faster than float32 there "
                      f"(it is a GPU precision); {fast}.", stacklevel=2)
    elif not native_bf16:
        warnings.warn(f"{key}: bf16 on this CPU ({capability}, without AVX-512 BF16 or AMX) is emulated and "
                      f"about 3-5x slower than float32 (3.4x for the scoring stage on an AVX2 CPU), so it runs as "
                      f"asked but float32 would be faster and exact.", stacklevel=2)
    return dtype


def wants_channels_last(dtype: torch.dtype | None, device: torch.device) -> bool:
    """channels_last where it is faster (docs/gpu-and-precision.md's measurements): reduced precision on CUDA, bf16 on the CPU.
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
