"""From stored uint8 crops to the model's input: RGB in [0, 1], then ImageNet normalisation."""
from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(device, dtype=torch.float32):
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, std


def to_pixels(crops: np.ndarray | torch.Tensor, device="cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on `device`."""
    t = torch.as_tensor(crops).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    mean, std = _stats(pixels.device, pixels.dtype)
    return (pixels - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = _stats(x.device, x.dtype)
    return x * std + mean


def to_model_input(crops, device="cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), the tensor every stage feeds the model."""
    return normalize(to_pixels(crops, device))
