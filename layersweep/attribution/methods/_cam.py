"""Shared by the CAM-family method files (the underscore keeps it out of the registry scan)."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl
import torch


def weighted_channel_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_c weights[b, c] * activations[b, c, h, w] -> (B, H, W), as one batched matmul.

    Same as pytorch-grad-cam's `(weights[:, :, None, None] * activations).sum(axis=1)` without the
    (B, C, H, W) temporary.
    """
    b, c, h, w = activations.shape
    return torch.bmm(weights[:, None, :], activations.reshape(b, c, h * w)).reshape(b, h, w)


def first_component_projection(matrices: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's `get_2d_projection` (utils/svd_on_activations.py), per image: the (H*W, C) rows
    centred over positions, projected on their first right singular vector -> (B, H, W).

    The sign of a singular vector is LAPACK's arbitrary choice, and after the CAM's ReLU it decides the
    whole map, so this runs numpy's SVD on the CPU in float32 as the library does. `full_matrices=False`
    gives the library's vector (its full U is (H*W)^2: 10 GB at 224 px) with the same sign; torch's SVD
    or an eigendecomposition of X^T X often flip it (METHODS.md 1.6).
    """
    m = matrices.detach().to("cpu", torch.float32).numpy()
    b, c, h, w = m.shape
    out = np.empty((b, h * w), dtype=np.float32)

    def project(i):
        x = m[i].reshape(c, h * w).T.copy()
        x[np.isnan(x)] = 0  # as the library
        x = x - x.mean(axis=0)
        vt = np.linalg.svd(x, full_matrices=False)[2]
        out[i] = x @ vt[0]

    # one BLAS thread per SVD, crops in parallel (LAPACK releases the GIL): a tall-skinny SVD gains little
    # from BLAS threads, and OpenBLAS threads competing with torch's made it 17x slower on 2 busy cores
    # (14.6 s vs 0.84 s for 12544 x 64)
    with threadpoolctl.threadpool_limits(1, user_api="blas"), \
            ThreadPoolExecutor(max_workers=max(1, min(b, torch.get_num_threads()))) as pool:
        list(pool.map(project, range(b)))
    return torch.from_numpy(out.reshape(b, h, w)).to(device=matrices.device, dtype=matrices.dtype)
