"""Attribution shards: one .npz per (method, shard) holding every layer's maps.

Layout (read by the metric stage; keep it exactly):
    method   0-d str array        the method name
    crop_id  str array (N,)       stable crop ids
    target   int64 (N,)           target class
    logit    float32 (N,)         target logit of the unperturbed crop
    prob     float32 (N,)         softmax probability of the target
    layers   int64 (L,)           layer indices (-1 = the model input)
    map_{l}  (N, H_l, W_l)        float32 or float16 (`store_dtype`), one key per layer l
    weights_{l} float32 (N, C_l)  optional (`attribution.store_weights`): per-channel weights of the
                                  channel-weighted methods, for the layers that have them
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import LayersweepError
from ..io import save_npz

STORE_DTYPES = ("float32", "float16")
_KEYS = ("method", "crop_id", "target", "logit", "prob", "layers")


def write_attribution_shard(path, method, crop_ids, targets, logit, prob, maps_by_layer, store_dtype="float32",
                            weights_by_layer=None) -> None:
    """Write one shard atomically (layersweep.io.save_npz): the file appears complete or not at all."""
    dtype = str(np.dtype(store_dtype)) if isinstance(store_dtype, (type, np.dtype)) else str(store_dtype)
    if dtype not in STORE_DTYPES:
        raise LayersweepError(f"store_dtype is {store_dtype!r}; use 'float32' or 'float16' (config key 'attribution.store_dtype').")
    crop_ids = np.asarray(crop_ids).astype(str)
    n = crop_ids.shape[0] if crop_ids.ndim == 1 else -1
    columns = {"target": np.asarray(targets).astype(np.int64), "logit": np.asarray(logit, dtype=np.float32),
               "prob": np.asarray(prob, dtype=np.float32)}
    for key, arr in columns.items():
        if arr.shape != (n,):
            raise LayersweepError(f"shard {path}: '{key}' has shape {arr.shape}, expected ({n},) like crop_id.")
    if not maps_by_layer:
        raise LayersweepError(f"shard {path}: no maps to write.")
    arrays = {}
    for layer in sorted(maps_by_layer):
        m = np.asarray(maps_by_layer[layer])
        if m.ndim != 3 or m.shape[0] != n:
            raise LayersweepError(f"shard {path}: the map of layer {layer} has shape {m.shape}, expected ({n}, H, W).")
        with np.errstate(over="ignore"):  # overflow is checked just below, with a clear message
            stored = m.astype(dtype)
        if dtype == "float16" and not np.array_equal(np.isfinite(stored), np.isfinite(m)):
            raise LayersweepError(f"shard {path}: the map of layer {layer} exceeds the float16 range; use store_dtype 'float32'.")
        arrays[f"map_{int(layer)}"] = stored
    for layer, w in sorted((weights_by_layer or {}).items()):
        w = np.asarray(w, dtype=np.float32)
        if layer not in maps_by_layer or w.ndim != 2 or w.shape[0] != n:
            raise LayersweepError(f"shard {path}: the weights of layer {layer} have shape {w.shape}, expected ({n}, C) "
                                  f"at a layer that has a map.")
        arrays[f"weights_{int(layer)}"] = w
    save_npz(path, method=np.array(str(method)), crop_id=crop_ids, layers=np.array(sorted(int(k) for k in maps_by_layer), dtype=np.int64),
             **columns, **arrays)


def read_attribution_shard(path) -> dict:
    """Read a shard: {"method": str, "crop_id", "target", "logit", "prob", "layers": arrays,
    "maps": {layer: (N, H_l, W_l)}, "weights": {layer: (N, C_l)} (empty unless stored)}. Raises LayersweepError naming the file when it is missing,
    not a valid .npz, lacks a key or has inconsistent lengths."""
    if not os.path.isfile(path):
        raise LayersweepError(f"attribution shard {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise LayersweepError(f"attribution shard {path} is a .npy array, not an .npz archive.")
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise LayersweepError(f"attribution shard {path} lacks the key '{missing[0]}'.")
            data = {k: npz[k] for k in _KEYS}
            layers = [int(v) for v in data["layers"]]
            missing = [f"map_{layer}" for layer in layers if f"map_{layer}" not in npz.files]
            if missing:
                raise LayersweepError(f"attribution shard {path} lacks the key '{missing[0]}'.")
            maps = {layer: npz[f"map_{layer}"] for layer in layers}
            weights = {layer: npz[f"weights_{layer}"] for layer in layers if f"weights_{layer}" in npz.files}
    except LayersweepError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as err:
        # np.load may fail lazily, per member: every member is read inside this block
        raise LayersweepError(f"attribution shard {path} is not a valid .npz file ({type(err).__name__}: {err}).") from None
    if data["method"].ndim != 0:
        raise LayersweepError(f"attribution shard {path}: 'method' is not a 0-d string array.")
    n = data["crop_id"].shape[0]
    for key in ("target", "logit", "prob"):
        if data[key].shape != (n,):
            raise LayersweepError(f"attribution shard {path}: '{key}' has shape {data[key].shape}, expected ({n},).")
    for layer, m in maps.items():
        if m.ndim != 3 or m.shape[0] != n:
            raise LayersweepError(f"attribution shard {path}: 'map_{layer}' has shape {m.shape}, expected ({n}, H, W).")
    data["method"] = str(data["method"])
    for layer, w in weights.items():
        if w.ndim != 2 or w.shape[0] != n:
            raise LayersweepError(f"attribution shard {path}: 'weights_{layer}' has shape {w.shape}, expected ({n}, C).")
    data["maps"] = maps
    data["weights"] = weights  # {} unless the shard was written with attribution.store_weights
    return data
