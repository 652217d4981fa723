"""Fig. 2: example crops beside their DeepLiftShap maps at one site (features.18 in the report) and at the input."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import LayersweepError
from .style import long_map, new_figure, transparent_diverging, upsample, write_outputs

def fig2(crops, crop_ids, maps_l18, maps_input, out_pdf, out_png, out_csv, *, demo, dpi,
         layer_name: str = "features.18") -> pd.DataFrame:
    """Example crops beside their DeepLiftShap maps at features[18] and at the input.

    crops (N, H, W, 3) uint8 (or float in [0, 1]); maps_l18 (N, h, w); maps_input (N, H, W) or
    (N, C, H, W), summed over C. The CSV holds the maps at their native resolution.
    """
    crops = np.asarray(crops)
    maps_l18 = np.asarray(maps_l18, dtype=float)
    maps_input = np.asarray(maps_input, dtype=float)
    crop_ids = [str(c) for c in crop_ids]
    if crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise LayersweepError(f"fig2's crops must be a non-empty (N, H, W, 3) array, not shape {crops.shape}.")
    n, size = len(crops), crops.shape[1:3]
    if maps_input.ndim == 4:
        maps_input = maps_input.sum(axis=1)  # attributions per colour channel -> per pixel
    if len(crop_ids) != n:
        raise LayersweepError(f"fig2 got {len(crop_ids)} crop ids for {n} crops.")
    if maps_l18.ndim != 3 or len(maps_l18) != n:
        raise LayersweepError(f"fig2's {layer_name} maps must be (N={n}, h, w), not shape {maps_l18.shape}.")
    if maps_input.shape != (n, *size):
        raise LayersweepError(f"fig2's input maps must be (N={n}, {size[0]}, {size[1]}) or (N, C, H, W), "
                              f"not shape {maps_input.shape}.")
    if crops.dtype == np.uint8:
        crops = crops.astype(float) / 255.0

    table = pd.concat([long_map(cid, name, m[i]) for i, cid in enumerate(crop_ids)
                       for name, m in ((layer_name, maps_l18), ("input", maps_input))], ignore_index=True)

    cmap = transparent_diverging()
    h18, w18 = maps_l18.shape[1:]
    fig = new_figure((11.0, 3.2 * n + 0.6), demo)
    axes = fig.subplots(n, 3, squeeze=False)
    titles = ("crop", f"DeepLiftShap at {layer_name}\n({h18}x{w18}, bilinear to {size[0]}x{size[1]})",
              "DeepLiftShap at the input\n(summed over RGB)")
    for i, cid in enumerate(crop_ids):
        gray = crops[i] @ np.array([0.299, 0.587, 0.114])
        axes[i, 0].imshow(np.clip(crops[i], 0, 1), interpolation="nearest")
        axes[i, 0].set_ylabel(f"crop {cid}", fontsize=10)
        for j, m in ((1, upsample(maps_l18[i], size)), (2, maps_input[i])):
            ax = axes[i, j]
            lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
            lim = lim if lim > 0 else 1.0  # an all-zero map still gets a valid, centred scale
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1, alpha=0.45, interpolation="nearest")
            im = ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
            cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.ax.tick_params(labelsize=7)
            cb.formatter.set_powerlimits((-2, 3))
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
    fig.suptitle("Fig. 2: DeepLiftShap attributions (red > 0, blue < 0, colour scale centred at 0)", fontsize=12)
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)

