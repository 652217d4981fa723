"""Glue the Snakemake scripts share: which crops a shard holds, the baselines, the fitted model."""
from __future__ import annotations

import numpy as np

from .data import baseline_crop_ids, eval_order, read_split
from .device import resolve_device
from .errors import LayersweepError
from .model import load_model, load_pretrained


def select(crops: np.ndarray, index, crop_ids) -> tuple[np.ndarray, np.ndarray]:
    """Crops and labels of `crop_ids`, in that order."""
    pos = {cid: i for i, cid in enumerate(index["crop_id"])}
    missing = [c for c in crop_ids if c not in pos]
    if missing:
        raise LayersweepError(f"crop id '{missing[0]}' is not among the test crops; check config key 'figures.example_crops'.")
    rows = np.array([pos[c] for c in crop_ids], dtype=np.int64)
    return crops[rows], index["label"].to_numpy()[rows]


def crops_by_id(crops_path, index_path, crop_ids):
    """uint8 crops and labels of `crop_ids`, read through a memory map (a shard needs a few rows)."""
    return select(*read_split(crops_path, index_path, mmap_mode="r"), crop_ids)


def shard_crops(shard, crops_path, index_path):
    """(crop ids, uint8 crops) of the crops an attribution shard (an AttributionShard, read once by the caller)
    holds."""
    ids = shard.crop_ids
    return ids, crops_by_id(crops_path, index_path, ids)[0]


def eval_shard(crops_path, index_path, *, seed: int, start: int, stop: int):
    """(crop ids, uint8 crops, labels) of evaluation positions [start, stop)."""
    crops, index = read_split(crops_path, index_path, mmap_mode="r")  # a shard needs a few rows
    order = eval_order(index, seed)
    if stop > len(order):
        raise LayersweepError(f"config key 'data.n_images' asks for {stop} evaluation crops but the test split has only {len(order)}.")
    ids = list(order[start:stop])
    crops_sel, labels = select(crops, index, ids)
    return ids, crops_sel, labels


def example_crop_ids(index, spec, seed: int) -> list[str]:
    """figures.example_crops: the first N evaluation crops, or explicit crop ids."""
    if isinstance(spec, int):
        return list(eval_order(index, seed)[:spec])
    return list(spec)


def baselines(inputs, n: int, seed: int) -> np.ndarray:
    """The DeepLiftShap baseline distribution: n random trainval crops (seeded)."""
    train_crops, train_index = read_split(inputs.train_crops, inputs.train_index, mmap_mode="r")
    val_crops, val_index = read_split(inputs.val_crops, inputs.val_index, mmap_mode="r")
    wanted = baseline_crop_ids(train_index, val_index, n, seed)
    parts = {}
    for crops, index in ((train_crops, train_index), (val_crops, val_index)):
        in_split = [c for c in wanted if c in set(index["crop_id"])]
        if in_split:
            parts.update(zip(in_split, select(crops, index, in_split)[0]))
    return np.stack([parts[c] for c in wanted])


def fitted_model(inputs, device_name: str, spec: dict | None = None):
    """(model, device): the fine-tuned model of the head checkpoint, or, when the rule gives no checkpoint
    (model.source torchray_voc: no head stage), the pretrained model of `spec` (the rule's `model` param)."""
    device = resolve_device(device_name, claim_gpu=True)  # held until the job ends
    weights = inputs.get("weights") if hasattr(inputs, "get") else None
    checkpoint = inputs.get("checkpoint") if hasattr(inputs, "get") else getattr(inputs, "checkpoint", None)
    if checkpoint:
        return load_model(checkpoint, weights_path=weights or None, device=device), device
    if spec is None:
        raise LayersweepError("no model checkpoint and no model spec were given; the rule must pass the head checkpoint or its 'model' param.")
    return load_pretrained(spec, weights_path=weights or None, device=device), device


def shard_boxes(index_path, crop_ids):
    """Boxes (k, 4) of each sample of `crop_ids` (image mode), in that order; None in crop mode (no boxes)."""
    import pandas as pd

    from .data import BOXES_COLUMN, sample_boxes

    index = pd.read_parquet(index_path)
    if BOXES_COLUMN not in index.columns:
        return None
    pos = {cid: i for i, cid in enumerate(index["crop_id"])}
    boxes = sample_boxes(index)
    return [boxes[pos[c]] for c in crop_ids]


def method_on_inputs(model, inputs, shard, attribution: dict, *, seed: int, device, preprocessing):
    """fn(images, targets, crop_ids=None, layers=None) -> {layer: maps}: the method of `shard` (an
    AttributionShard) at the shard's layers (or `layers`, some of them) on new normalised inputs, with the
    attribution rule's settings (`attribution`: attribute_to, n_baselines, max_pairs, precision, perturb_batch,
    options), for metrics that recompute explanations (sensitivity, coherency)."""
    from .attribution import attribute_layers, get_method
    from .preprocess import to_model_input

    method, layers = shard.method, list(shard.layers)
    m = get_method(method)
    # a mix method (RefineCAM) runs in its base's pass, and its map at a layer mixes every deeper layer's
    mix = m.pass_kind == "mix"
    pass_kind = get_method(attribution["options"].get("base", m.options.get("base"))).pass_kind if mix else m.pass_kind
    base = None
    if pass_kind == "deeplift":
        base = to_model_input(baselines(inputs, attribution["n_baselines"], seed), device, preprocessing)

    def attribute(images, targets, crop_ids=None, layers=layers):
        # `layers`: a subset of the shard's, when the caller keeps only some (coherency: one per explanation image);
        # a mix method is always recomputed at all the shard's layers (the caller picks its layers from them)
        layers = list(shard.layers) if mix else layers
        return attribute_layers(model, images, targets, [method], layers, baselines=base,
                                attribute_to=attribution["attribute_to"], max_pairs=attribution["max_pairs"],
                                precision=attribution["precision"], options={method: dict(attribution["options"])},
                                seed=seed, crop_ids=crop_ids, perturb_batch=attribution["perturb_batch"])[method]

    return attribute
