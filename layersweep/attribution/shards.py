"""Attribution shards: one .npz per (method, shard) holding every layer's maps, read and written here only.

`AttributionShard` is the typed shard; `read_attribution_shard` / `write_attribution_shard` its file I/O, and
`AttributionShard.from_arrays` the one validation, for a file and for a mapping of arrays alike.

Layout of the .npz (keep it readable: every stage reads it through this module):
    method   0-d str array        the method name
    crop_id  str array (N,)       stable crop ids
    target   int64 (N,)           target class
    logit    float32 (N,)         target logit of the unperturbed crop
    prob     float32 (N,)         softmax probability of the target
    layers   int64 (L,)           layer indices (-1 = the model input)
    map_{l}  (N, H_l, W_l)        float32 or float16 (`store_dtype`), one key per layer l
    weights_{l} float32 (N, C_l)  optional (`attribution.store_weights`): per-channel weights of the
                                  channel-weighted methods, for the layers that have them
    any other key                 kept as it is in `AttributionShard.extra` (read and written back), so a new
                                  per-shard array can be added without breaking the readers

A new typed field (e.g. a per-shard table of the layers' sites): declare it on `AttributionShard` with a default,
read its key in `from_arrays` (absent in older files: the default), write it in `to_arrays`, and add the key to
KNOWN_KEYS so that it is not also kept in `extra`.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import LayersweepError
from ..io import save_npz

STORE_DTYPES = ("float32", "float16")
REQUIRED_KEYS = ("method", "crop_id", "target", "layers")  # + one map_{l} per layer
PER_CROP_KEYS = ("logit", "prob")                         # optional in a mapping; always written
KNOWN_KEYS = REQUIRED_KEYS + PER_CROP_KEYS                # + map_{l}, weights_{l}; any other key: `extra`
_LAYER_KEY = re.compile(r"^(map|weights)_(-?\d+)$")


@dataclass
class AttributionShard:
    """One method's maps of one shard of crops, at every layer.

    method: the method's name; crop_id (N,) str; target (N,) int64; logit, prob (N,) float32 or None (a mapping
    without them); maps {layer: (N, H_l, W_l) float}, in layer order; weights {layer: (N, C_l)} (empty unless
    stored); extra {key: array}: any other array of the file, kept as it is; name: the file (for messages).
    """
    method: str
    crop_id: np.ndarray
    target: np.ndarray
    maps: dict
    logit: np.ndarray | None = None
    prob: np.ndarray | None = None
    weights: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    name: str = "attribution shard"

    @property
    def layers(self) -> list[int]:
        return list(self.maps)

    @property
    def crop_ids(self) -> list[str]:
        return [str(c) for c in self.crop_id]

    def __len__(self) -> int:
        return len(self.crop_id)

    def __getitem__(self, key: str):
        """shard["maps"] is shard.maps (and so on for every field): code written against the former dict."""
        if key not in self.__dataclass_fields__ and key != "layers":
            raise KeyError(key)
        return np.array(self.layers, dtype=np.int64) if key == "layers" else getattr(self, key)

    # ---- the one validation, from the arrays of a file or of a mapping
    @classmethod
    def from_arrays(cls, arrays, name: str = "attribution shard") -> "AttributionShard":
        """Validate a mapping of the file's arrays (module docstring) and build the shard. Raises LayersweepError
        naming `name` and the key for a missing key, a wrong type or an inconsistent length."""
        keys = set(arrays.keys())
        for key in REQUIRED_KEYS:
            if key not in keys:
                raise LayersweepError(f"{name} lacks the key '{key}'.")
        method = np.asarray(arrays["method"])
        if method.ndim != 0 or method.dtype.kind not in "US":
            raise LayersweepError(f"{name}: key 'method' must be a 0-d string array, not {method!r}.")
        crop_id = np.asarray(arrays["crop_id"]).reshape(-1).astype(str)
        n = len(crop_id)
        if len(set(crop_id.tolist())) != n:
            raise LayersweepError(f"{name}: key 'crop_id' lists a crop twice.")
        target = np.asarray(arrays["target"])
        if target.dtype.kind not in "iu" or target.shape != (n,):
            raise LayersweepError(f"{name}: key 'target' must hold {n} integers (one per crop_id), not "
                                  f"{target.dtype} {target.shape}.")
        per_crop = {}
        for key in PER_CROP_KEYS:
            if key in keys:
                v = np.asarray(arrays[key])
                if v.shape != (n,):
                    raise LayersweepError(f"{name}: key '{key}' has shape {v.shape}, expected ({n},) like crop_id.")
                per_crop[key] = v
        maps = {}
        for layer in (int(v) for v in np.asarray(arrays["layers"]).reshape(-1)):
            key = f"map_{layer}"
            if key not in keys:
                raise LayersweepError(f"{name} lacks the key '{key}' for layer {layer} listed in 'layers'.")
            m = np.asarray(arrays[key])
            if m.ndim != 3 or len(m) != n or m.dtype.kind != "f":
                raise LayersweepError(f"{name}: key '{key}' must be a float array (N={n}, H, W), not {m.dtype} {m.shape}.")
            maps[layer] = m
        weights = {}
        for layer in maps:
            key = f"weights_{layer}"
            if key in keys:
                w = np.asarray(arrays[key])
                if w.ndim != 2 or len(w) != n:
                    raise LayersweepError(f"{name}: key '{key}' has shape {w.shape}, expected ({n}, C).")
                weights[layer] = w
        known = set(KNOWN_KEYS) | {f"map_{l}" for l in maps} | {f"weights_{l}" for l in weights}
        extra = {k: np.asarray(arrays[k]) for k in sorted(keys - known)}
        return cls(method=str(method), crop_id=crop_id, target=target.astype(np.int64), maps=maps,
                   logit=per_crop.get("logit"), prob=per_crop.get("prob"), weights=weights, extra=extra, name=name)

    def to_arrays(self, store_dtype="float32") -> dict:
        """The file's arrays: maps cast to `store_dtype` (float32 | float16), checked (module docstring)."""
        dtype = str(np.dtype(store_dtype)) if isinstance(store_dtype, (type, np.dtype)) else str(store_dtype)
        if dtype not in STORE_DTYPES:
            raise LayersweepError(f"store_dtype is {store_dtype!r}; use 'float32' or 'float16' (config key "
                                  f"'attribution.store_dtype').")
        crop_id = np.asarray(self.crop_id).astype(str)
        n = crop_id.shape[0] if crop_id.ndim == 1 else -1
        columns = {"target": np.asarray(self.target).astype(np.int64)}
        for key in PER_CROP_KEYS:
            value = getattr(self, key)
            columns[key] = np.full(n, np.nan, np.float32) if value is None else np.asarray(value, dtype=np.float32)
        for key, arr in columns.items():
            if arr.shape != (n,):
                raise LayersweepError(f"shard {self.name}: '{key}' has shape {arr.shape}, expected ({n},) like crop_id.")
        if not self.maps:
            raise LayersweepError(f"shard {self.name}: no maps to write.")
        arrays = {}
        for layer in sorted(self.maps):
            m = np.asarray(self.maps[layer])
            if m.ndim != 3 or m.shape[0] != n:
                raise LayersweepError(f"shard {self.name}: the map of layer {layer} has shape {m.shape}, expected ({n}, H, W).")
            with np.errstate(over="ignore"):  # overflow is checked just below, with a clear message
                stored = m.astype(dtype)
            if dtype == "float16" and not np.array_equal(np.isfinite(stored), np.isfinite(m)):
                raise LayersweepError(f"shard {self.name}: the map of layer {layer} exceeds the float16 range; use "
                                      f"store_dtype 'float32'.")
            arrays[f"map_{int(layer)}"] = stored
        for layer, w in sorted((self.weights or {}).items()):
            w = np.asarray(w, dtype=np.float32)
            if layer not in self.maps or w.ndim != 2 or w.shape[0] != n:
                raise LayersweepError(f"shard {self.name}: the weights of layer {layer} have shape {w.shape}, expected "
                                      f"({n}, C) at a layer that has a map.")
            arrays[f"weights_{int(layer)}"] = w
        taken = set(KNOWN_KEYS) | set(arrays)
        clash = [k for k in self.extra if k in taken or _LAYER_KEY.match(k)]
        if clash:
            raise LayersweepError(f"shard {self.name}: the extra array '{clash[0]}' has the name of a shard key.")
        return dict(method=np.array(str(self.method)), crop_id=crop_id,
                    layers=np.array(sorted(int(k) for k in self.maps), dtype=np.int64), **columns, **arrays,
                    **{k: np.asarray(v) for k, v in self.extra.items()})

    def write(self, path, store_dtype="float32") -> None:
        """Write atomically (layersweep.io.save_npz): the file appears complete or not at all."""
        save_npz(path, **self.to_arrays(store_dtype))


def write_attribution_shard(path, method, crop_ids, targets, logit, prob, maps_by_layer, store_dtype="float32",
                            weights_by_layer=None, extra=None) -> None:
    """Write one shard atomically (`AttributionShard.write`) from its parts; `extra` {key: array} is stored
    as it is (the pipeline stores each layer's site name and DeepLift rule set)."""
    AttributionShard(method=str(method), crop_id=np.asarray(crop_ids), target=np.asarray(targets),
                     maps=dict(maps_by_layer or {}), logit=logit, prob=prob, weights=dict(weights_by_layer or {}),
                     extra=dict(extra or {}), name=os.fspath(path)).write(path, store_dtype)


def read_attribution_shard(path) -> AttributionShard:
    """Read and validate a shard. Raises LayersweepError naming the file when it is missing, not a valid .npz,
    lacks a key or has inconsistent lengths."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise LayersweepError(f"attribution shard {name} does not exist.")
    try:
        with np.load(name, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise LayersweepError(f"attribution shard {name} is a .npy array, not an .npz archive.")
            arrays = {k: npz[k] for k in npz.files}  # every member read here: np.load fails lazily, per member
    except LayersweepError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as err:
        raise LayersweepError(f"attribution shard {name} is not a valid .npz file ({type(err).__name__}: {err}).") from None
    return AttributionShard.from_arrays(arrays, f"attribution shard {name}")


def as_attribution_shard(shard) -> AttributionShard:
    """An AttributionShard as it is, a path read with `read_attribution_shard`, or a mapping of the file's arrays
    validated with `AttributionShard.from_arrays`."""
    if isinstance(shard, AttributionShard):
        return shard
    if isinstance(shard, (str, os.PathLike)):
        return read_attribution_shard(shard)
    return AttributionShard.from_arrays(shard)
