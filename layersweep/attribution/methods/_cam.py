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
    centred over positions, projected on their first right singular vector -> (B, H, W), in the input's dtype.

    The sign of a singular vector is LAPACK's arbitrary choice, and after the CAM's ReLU it decides the whole
    map; on some maps a few-ulp change of the centred matrix flips it (issue 21). So this repeats the
    library's arithmetic step by step, on the CPU with numpy, in the input's dtype (float32 or float64; only
    other dtypes are widened to float32, which numpy's SVD needs):
    - a C-ordered copy of the batch, NaNs set to 0: torch often hands conv outputs over channels_last, and
      the summation order of the mean follows the memory layout;
    - per image, the transposed *view* (H*W, C) is centred: numpy sums along its contiguous axis pairwise,
      whereas a C-ordered copy of the transpose would be summed row by row and round differently;
    - `full_matrices=False`: the library's first right singular vector, sign included (checked map by map in
      tests/test_methods_eigen_sign.py), without its full U, which is (H*W)^2: 10 GB at 224 px. torch's SVD
      or an eigendecomposition of X^T X often flip the sign (docs/methods.md, EigenCAM's sign).
    """
    m = matrices.detach().cpu()
    if m.dtype not in (torch.float32, torch.float64):
        m = m.float()
    a = m.numpy().copy()  # as the library: C order, and the caller's tensor is not touched by the NaN fill
    a[np.isnan(a)] = 0
    b, c, h, w = a.shape
    out = np.empty((b, h * w), dtype=a.dtype)

    def project(i):
        x = a[i].reshape(c, h * w).transpose()
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
