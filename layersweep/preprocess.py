"""From stored uint8 crops to the model's input: RGB in [0, 1], then the model's normalisation.

Every stage that feeds the model (attribution, the metrics' masking and blur, the cached features, fig2)
goes through one `Preprocessing`, chosen by config key 'model.source':
- torchvision: ImageNet mean and std on the [0, 1] scale (the default everywhere);
- torchray_voc: Caffe's, i.e. the per-channel mean [123.68, 116.779, 103.939] (RGB; TorchRay writes it
  as the BGR mean [103.939, 116.779, 123.68]) subtracted on the 0-255 scale, no std division. As TorchRay's
  own transform does, this is written as mean / 255 and std 1 / 255 on the [0, 1] scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import LayersweepError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # TorchRay's VOC VGG16, on the 0-255 scale


@dataclass(frozen=True)
class Preprocessing:
    """x = (pixels - mean) / std per RGB channel, pixels in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def stats(self, device, dtype=torch.float32):
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, 3, 1, 1)
        return mean, std


TORCHVISION = Preprocessing(IMAGENET_MEAN, IMAGENET_STD)
TORCHRAY_VOC = Preprocessing(tuple(m / 255.0 for m in reversed(CAFFE_BGR_MEAN)), (1 / 255.0,) * 3)
PREPROCESSING = {"torchvision": TORCHVISION, "torchray_voc": TORCHRAY_VOC, "torchvision_imagenet": TORCHVISION}


def preprocessing_for(source: str = "torchvision") -> Preprocessing:
    """The preprocessing of config key 'model.source'."""
    if isinstance(source, Preprocessing):
        return source
    try:
        return PREPROCESSING[source]
    except (KeyError, TypeError):
        raise LayersweepError(f"config key 'model.source' has the unknown value {source!r}; use one of {', '.join(PREPROCESSING)}.") from None


def to_pixels(crops: np.ndarray | torch.Tensor, device="cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on `device`."""
    t = torch.as_tensor(crops).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(pixels: torch.Tensor, preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    mean, std = preprocessing.stats(pixels.device, pixels.dtype)
    return (pixels - mean) / std


def denormalize(x: torch.Tensor, preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    mean, std = preprocessing.stats(x.device, x.dtype)
    return x * std + mean


def to_model_input(crops, device="cpu", preprocessing: Preprocessing = TORCHVISION) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), the tensor every stage feeds the model."""
    return normalize(to_pixels(crops, device), preprocessing)
