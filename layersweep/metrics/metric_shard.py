"""Stage function of an added metric (`registry`): score every map of one attribution shard.

Rows as `score_shard`'s (crop_id, method, layer, target, score, [r], constant) plus the metric's columns.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import LayersweepError
from ..precision import check_precision, precision_model
from ..preprocess import TORCHVISION, Preprocessing
from .registry import get_metric, metric_options
from .rescale import check_r, rescale_maps
from .scoring import check_mask_space, image_scores
from .shard import _check_prob, _frame, _nonconstant_maps, _prepare


@dataclass
class MetricContext:
    """What a metric's `score(ctx)` works from (see the contract in `registry`)."""
    name: str
    model: torch.nn.Module
    x: torch.Tensor            # (n, 3, H, W) normalised model inputs on `device`
    targets: torch.Tensor      # (n,) int64
    Y: torch.Tensor            # (n,) softmax score of x at the target
    method: str
    crop_ids: list
    layers: list
    raw_maps: dict             # {layer: np.ndarray (n, h_l, w_l)} as stored
    mask_space: str
    batch_size: int
    preprocessing: Preprocessing
    device: torch.device
    seed: int
    options: dict
    r: float | None
    rtol: float
    constant_eps: float
    progress: object
    boxes: list | None = None          # n float arrays (k_i, 4) x0, y0, x1, y1 in input pixels (image mode)
    attribute: Callable | None = None  # attribute(images, targets) -> {layer: (b, h_l, w_l)}
    constant: torch.Tensor = field(default=None)

    @property
    def n(self) -> int:
        return len(self.crop_ids)

    def groups(self, *, rescale: bool = True):
        """(maps01, crop_index, rows) of the non-constant maps, a bounded number of layers at a time; maps01 are
        min-max normalised after upsampling to the input, and rescaled to sum r*H*W when `r` is set (and
        `rescale`). Also fills `constant`."""
        sh = {"crop_id": self.crop_ids, "layers": self.layers, "maps": self.raw_maps}
        size = tuple(self.x.shape[-2:])
        bar = self.progress if self.progress else tqdm(total=0, disable=True)
        for maps01, ci, rows in _nonconstant_maps(sh, self.n, size, self.constant_eps, self.device, self.constant,
                                                  bar, 0):
            if self.r is not None and rescale:
                maps01 = rescale_maps(maps01, self.r, self.rtol)[0]
            yield maps01, ci, rows

    def crop_generator(self, i: int, stream: str = "") -> torch.Generator:
        """A generator seeded from (seed, crop id, metric, stream): a crop's draws do not depend on the batch
        size or on the other crops of the shard. On the device the draws are made on."""
        words = [int(self.seed), zlib.crc32(str(self.crop_ids[i]).encode()), zlib.crc32(self.name.encode()),
                 zlib.crc32(stream.encode())]
        seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))
        return torch.Generator(device=self.device).manual_seed(seed)


def score_metric_shard(name: str, model, crops_uint8, shard, *, crop_ids=None, options: dict | None = None,
                       r: float | None = None, rtol: float = 1e-4, mask_space: str = "normalized",
                       batch_size: int = 256, constant_eps: float = 1e-6, device="auto", precision: str = "float32", seed: int = 0,
                       boxes=None, attribute=None, progress: bool = True,
                       preprocessing: Preprocessing = TORCHVISION) -> pd.DataFrame:
    """The added metric `name` of every map of one shard (plain, or rescaled to sum r*H*W when `r` is given).

    boxes: per crop of the shard's order, (k, 4) boxes in input pixels, for metrics that need them.
    attribute: fn(images, targets) -> {layer: maps}, the shard's method on new inputs, for metrics that need it.
    Other arguments as `score_shard`. Returns one row per crop x layer (layer-major).
    """
    metric = get_metric(name)
    opts = metric_options(name, options)
    check_mask_space(mask_space)
    check_precision(precision, "metrics.precision")
    if r is not None:
        if not metric.rescaled:
            raise LayersweepError(f"metric {name!r} does not depend on map values; it has no rescaled variant.")
        r = check_r(r)
    sh, dev, x, t, model = _prepare(model, crops_uint8, shard, crop_ids, device, preprocessing)
    if "boxes" in metric.needs and (boxes is None or len(boxes) != len(sh["crop_id"])):
        raise LayersweepError(f"metric {name!r} needs the object boxes of each sample (data.samples: images); "
                              f"{sh['name']} has none.")
    if "attribution" in metric.needs and attribute is None:
        raise LayersweepError(f"metric {name!r} recomputes explanations; no attribution function was given.")
    n, L = len(sh["crop_id"]), len(sh["layers"])
    bar = tqdm(total=n, desc=f"{name} {sh['method']}" + ("" if r is None else f" r={r:g}"), unit="img",
               disable=not progress)
    try:
        with precision_model(model, dev, precision) as net:
            Y = image_scores(net, x, t, batch_size=batch_size, progress=bar)
            ctx = MetricContext(name, net, x, t, Y, sh["method"], sh["crop_id"], sh["layers"], sh["maps"],
                                mask_space, batch_size, preprocessing, dev, seed, opts, r, rtol, constant_eps,
                                bar if progress else False, boxes=boxes,
                                attribute=attribute, constant=torch.ones(L * n, dtype=torch.bool, device=dev))
            for _ in ctx.groups(rescale=False):  # which maps are constant, whether or not the metric walks the groups
                pass
            values = metric.score(ctx)
    finally:
        bar.close()
    const = ctx.constant.cpu().numpy()
    columns = {}
    for col in metric.columns:
        if col not in values:
            raise LayersweepError(f"metric {name!r} returned no column {col!r}.")
        v = np.asarray(torch.as_tensor(values[col]).double().cpu(), dtype=float).reshape(-1)
        if v.shape != (L * n,):
            raise LayersweepError(f"metric {name!r}: column {col!r} has {v.size} values for {L * n} maps.")
        columns[col] = np.where(const, np.nan, v)
    Yn = Y.cpu().numpy()
    _check_prob(sh, Yn)
    df = _frame(sh, Yn, {**columns, "constant": const})
    if r is not None:
        df.insert(4, "r", r)
    return df
