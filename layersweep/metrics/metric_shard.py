"""The stage function of every metric (`registry`): score every map of one attribution shard.

Rows layer-major, one per crop x layer: crop_id, method, layer, target, [r], score (Y, the softmax score of the
crop at its target), the metric's columns (NaN where the map is constant), its detail columns, constant.
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..attribution.shards import AttributionShard, as_attribution_shard
from ..device import resolve_device
from ..errors import LayersweepError
from ..precision import check_precision, precision_model
from ..preprocess import TORCHVISION, Preprocessing, to_model_input
from .batching import check_mask_space, image_scores, map_groups
from .registry import get_metric, metric_options
from .rescale import check_r, rescale_maps


@dataclass(eq=False)
class MetricContext:
    """What a metric's `score(ctx)` works from (the contract in `registry`)."""
    name: str
    model: torch.nn.Module     # on `device`, eval mode, in metrics.precision
    x: torch.Tensor            # (n, 3, H, W) normalised model inputs on `device`
    targets: torch.Tensor      # (n,) int64
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
    r: float | None            # the rescaling's r, None for the plain maps
    rtol: float
    constant_eps: float
    progress: object           # the stage's tqdm bar, or False
    boxes: list | None = None          # n float arrays (k_i, 4) x0, y0, x1, y1 in input pixels (image mode)
    attribute: Callable | None = None  # attribute(images, targets) -> {layer: (b, h_l, w_l)}
    masks: torch.Tensor | None = None  # (n, H, W) bool ground-truth masks (data.source shapes)
    constant: torch.Tensor | None = None  # (L*n,) bool, filled by `groups`
    _Y: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return len(self.crop_ids)

    @property
    def Y(self) -> torch.Tensor:
        """(n,) softmax score of each crop at its target: computed (n forwards) on first use, unless the metric
        set it from its own forwards (`set_scores`)."""
        if self._Y is None:
            self.add_work(self.n)
            self._Y = image_scores(self.model, self.x, self.targets, batch_size=self.batch_size,
                                   progress=self.progress)
        return self._Y

    def set_scores(self, Y: torch.Tensor) -> None:
        """The crops' scores from the metric's own forwards (core scores them with the blurred images)."""
        self._Y = Y

    def add_work(self, n_images: float) -> None:
        """Count `n_images` more forwards (or attribution passes) on the stage's progress bar."""
        if self.progress:
            self.progress.total += n_images
            self.progress.refresh()

    def groups(self, *, rescale: bool = True, forwards_per_map: float = 0):
        """(maps01, crop_index, rows) of the non-constant maps, a bounded number of layers at a time
        (`batching.map_groups`); maps01 are min-max normalised after upsampling to the input, and rescaled to sum
        r*H*W when `r` is set (and `rescale`). Fills `constant`; takes `forwards_per_map` off the progress bar
        for every constant map."""
        self.constant = torch.ones(len(self.layers) * self.n, dtype=torch.bool, device=self.device)
        for maps01, ci, rows in map_groups(self.raw_maps, self.layers, self.n, tuple(self.x.shape[-2:]),
                                           self.constant_eps, self.device, self.constant,
                                           self.progress or None, forwards_per_map):
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


def _crop_inputs(crops_uint8, crop_ids, sh: AttributionShard, device, preprocessing: Preprocessing):
    """The normalised tensor of the shard's crops, in the shard's order."""
    crops = np.asarray(crops_uint8) if not isinstance(crops_uint8, torch.Tensor) else crops_uint8
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype not in (np.uint8, torch.uint8):
        raise LayersweepError(f"crops must be uint8 (N, H, W, 3), not {crops.dtype} {tuple(crops.shape)}.")
    ids = sh.crop_ids
    if crop_ids is None:  # the crops are the shard's, row for row
        if len(crops) != len(ids):
            raise LayersweepError(f"{len(crops)} crops for the {len(ids)} crop ids of {sh.name}; pass crop_ids to match them by id.")
        rows = np.arange(len(ids))
    else:
        where = {str(c): i for i, c in enumerate(crop_ids)}
        if len(where) != len(crops):
            raise LayersweepError(f"crop_ids must name each of the {len(crops)} crops once.")
        missing = [c for c in ids if c not in where]
        if missing:
            raise LayersweepError(f"crop id '{missing[0]}' of {sh.name} is absent from the crops.")
        rows = np.array([where[c] for c in ids], dtype=np.int64)
    return to_model_input(crops[torch.as_tensor(rows) if isinstance(crops, torch.Tensor) else rows], device,
                          preprocessing)


def _check_prob(sh: AttributionShard, Y: np.ndarray) -> None:
    """The shard's prob (written by the attribution stage) against the score recomputed from the crops."""
    if sh.prob is None or sh.prob.shape != Y.shape:
        return
    gap = np.abs(np.asarray(sh.prob, dtype=float) - Y)
    if np.nanmax(gap, initial=0.0) > 1e-2:
        i = int(np.nanargmax(gap))
        warnings.warn(f"{sh.name}: the score of crop '{sh.crop_ids[i]}' recomputed from the crops ({Y[i]:.4f}) "
                      f"differs from the shard's prob ({float(sh.prob[i]):.4f}); are the crops or the model different?")


def _frame(sh: AttributionShard, Y: np.ndarray, columns: dict) -> pd.DataFrame:
    """Rows layer-major: (layer 0, crop 0..N-1), (layer 1, ...)."""
    n, L = len(sh), len(sh.layers)
    head = {
        "crop_id": np.tile(np.array(sh.crop_ids, dtype=object), L),
        "method": sh.method,
        "layer": np.repeat(np.array(sh.layers, dtype=np.int64), n),
        "target": np.tile(sh.target, L),
        "score": np.tile(Y.astype(float), L),
    }
    return pd.DataFrame({**head, **columns})


def score_metric_shard(name: str, model, crops_uint8, shard, *, crop_ids=None, options: dict | None = None,
                       r: float | None = None, rtol: float = 1e-4, mask_space: str = "normalized",
                       batch_size: int = 256, constant_eps: float = 1e-6, device="auto", precision: str = "float32",
                       seed: int = 0, boxes=None, attribute=None, progress: bool = True,
                       preprocessing: Preprocessing = TORCHVISION, masks=None) -> pd.DataFrame:
    """Metric `name` (registry) of every map of one shard: plain, or rescaled to sum r*H*W when `r` is given
    (its rescaled columns only).

    model: classifier returning logits (moved to `device` and put in eval mode; its forwards in `precision`,
    float32 | bf16 | float16, layersweep.precision). crops_uint8: (n, H, W, 3) uint8, either the shard's crops in
    its order (crop_ids=None) or any crops with their ids in `crop_ids`. shard: an AttributionShard, the path of
    its npz, or the mapping of its arrays (layersweep.attribution.shards). options: the metric's options (its
    defaults for those not given). preprocessing: the model's (`preprocessing_for(model.source)`), from uint8
    crops to its input. boxes: per crop of the shard's order, (k, 4) boxes in input pixels, for metrics that
    need them. attribute: fn(images, targets) -> {layer: maps}, the shard's method on new inputs, for metrics
    that need it. masks: (n, H, W) ground-truth masks in the shard's order, for metrics that need them.
    seed: the per-crop generators' (`MetricContext.crop_generator`).
    Returns one row per crop x layer (module docstring).
    """
    metric = get_metric(name)
    opts = metric_options(name, options)
    check_mask_space(mask_space)
    check_precision(precision, "metrics.precision")
    if r is not None:
        if not metric.rescaled:
            raise LayersweepError(f"metric {name!r} does not depend on map values; it has no rescaled variant.")
        r = check_r(r)
    sh = as_attribution_shard(shard)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every forward of a shard has the crops' fixed size
    x = _crop_inputs(crops_uint8, crop_ids, sh, dev, preprocessing)  # uint8 to the device once, normalised there
    t = torch.as_tensor(sh.target, device=dev)
    model = model.to(dev).eval()
    if "boxes" in metric.needs and (boxes is None or len(boxes) != len(sh)):
        raise LayersweepError(f"metric {name!r} needs the object boxes of each sample (data.samples: images); "
                              f"{sh.name} has none.")
    if "masks" in metric.needs:
        if masks is None or len(masks) != len(sh):
            raise LayersweepError(f"metric {name!r} needs the ground-truth mask of each sample (data.source: "
                                  f"shapes); {sh.name} has none.")
        masks = torch.as_tensor(np.asarray(masks)).bool().to(dev)
    if "attribution" in metric.needs and attribute is None:
        raise LayersweepError(f"metric {name!r} recomputes explanations; no attribution function was given.")
    n, L = len(sh), len(sh.layers)
    bar = tqdm(total=0, desc=f"{name} {sh.method}" + ("" if r is None else f" r={r:g}"), unit="img",
               disable=not progress)
    try:
        with precision_model(model, dev, precision) as net:
            ctx = MetricContext(name, net, x, t, sh.method, sh.crop_ids, sh.layers, sh.maps, mask_space,
                                batch_size, preprocessing, dev, seed, opts, r, rtol, constant_eps,
                                bar if progress else False, boxes=boxes, attribute=attribute,
                                masks=masks)
            values = metric.score(ctx)
            if ctx.constant is None:  # the metric walked no map group: which maps are constant
                for _ in ctx.groups(rescale=False):
                    pass
            Y = ctx.Y.cpu().numpy()
    finally:
        bar.close()
    const = ctx.constant.cpu().numpy()
    declared = metric.rescaled if r is not None else tuple(metric.columns)
    missing = [c for c in declared if c not in values]
    if missing:
        raise LayersweepError(f"metric {name!r} returned no column {missing[0]!r}.")
    columns = {}
    for col, value in values.items():
        if col not in declared:  # a detail column (core's curves, exponent...): kept as the metric made it
            columns[col] = value
            continue
        v = np.asarray(torch.as_tensor(value).double().cpu(), dtype=float).reshape(-1)
        if v.shape != (L * n,):
            raise LayersweepError(f"metric {name!r}: column {col!r} has {v.size} values for {L * n} maps.")
        columns[col] = np.where(const, np.nan, v)
    _check_prob(sh, Y)
    df = _frame(sh, Y, {**columns, "constant": const})
    if r is not None:
        df.insert(4, "r", r)
    return df
