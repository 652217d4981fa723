"""Shared by the CAM-family method files (the underscore keeps it out of the registry scan)."""
import torch


def weighted_channel_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_c weights[b, c] * activations[b, c, h, w] -> (B, H, W), as one batched matmul.

    Same as pytorch-grad-cam's `(weights[:, :, None, None] * activations).sum(axis=1)` without the
    (B, C, H, W) temporary.
    """
    b, c, h, w = activations.shape
    return torch.bmm(weights[:, None, :], activations.reshape(b, c, h * w)).reshape(b, h, w)
