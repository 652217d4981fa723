"""What several benchmarks share: best-of-N timing and the random VGG11 they compare on.

The benchmarks run as `python bench/<name>.py`, which puts this folder on the import path.
"""
from __future__ import annotations

import time

import torch
import torchvision
from torch import nn


def best_of(fn, repeats: int):
    """Best of `repeats` (wall seconds, process CPU seconds), and the last result: other jobs on a shared machine
    only add time."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def random_vgg11(bias_std: float) -> nn.Module:
    """VGG11 with random weights and 20 classes, its biases drawn from N(0, bias_std) (non-zero biases make a
    difference of sign or offset show), in eval mode. Draws from torch's global generator: seed it first."""
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, bias_std)
    return model.eval()
