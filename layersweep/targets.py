"""The explained class (config key 'data.target'): the sample's label, or top1, the model's argmax on the
unperturbed sample, computed once per evaluated sample before the attribution stage (rule top1) and stored in
a copy of the test index (results/data/test-top1.parquet) that every later stage reads instead:
- label: the prediction for the evaluated rows (their own label for the rows never evaluated); true_label: the
  sample's label; top1: the prediction, -1 where none was computed;
- image mode (one row per (image, class present) on VOC): one row per image is evaluated (eval_candidate, the
  image's first row), since the explained class no longer depends on the row; its boxes become the boxes of the
  predicted class in that image, [] when the image has none (the pointing game leaves it out and counts it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import BOXES_COLUMN, EVAL_CANDIDATE, eval_order, read_split
from .errors import LayersweepError
from .io import atomic_path
from .preprocess import TORCHVISION, Preprocessing, to_model_input

TARGETS = ("label", "top1")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise LayersweepError(f"config key 'data.target' has the unknown value {target!r}; use 'label' or 'top1'.")
    return target


@torch.no_grad()
def predict_top1(model: torch.nn.Module, crops: np.ndarray, *, device="cpu", batch_size: int = 64,
                 preprocessing: Preprocessing = TORCHVISION) -> np.ndarray:
    """argmax of the model's output on each unperturbed uint8 sample (N, H, W, 3), int64 (N,)."""
    model = model.eval()
    out = [model(to_model_input(crops[s:s + batch_size], device, preprocessing)).argmax(1).cpu()
           for s in range(0, len(crops), batch_size)]
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def candidates(index: pd.DataFrame, samples: str) -> np.ndarray:
    """Rows the evaluation draws from: every row, or in image mode the first row (by sample id) of each image."""
    if samples != "images":
        return np.ones(len(index), dtype=bool)
    return ~index.sort_values("crop_id", kind="stable")["image_id"].duplicated().reindex(index.index).to_numpy()


def top1_index(index: pd.DataFrame, evaluated_ids, predictions) -> pd.DataFrame:
    """The test index with the predictions of `evaluated_ids` as their label (module docstring)."""
    out = index.copy()
    out["true_label"] = index["label"].astype("int64")
    out["top1"] = np.int64(-1)
    pos = {cid: i for i, cid in enumerate(index["crop_id"])}
    rows = np.array([pos[c] for c in evaluated_ids], dtype=np.int64)
    pred = np.asarray(predictions, dtype=np.int64)
    if len(rows) != len(pred):
        raise LayersweepError(f"{len(pred)} predictions for {len(rows)} evaluated samples.")
    out.loc[out.index[rows], "top1"] = pred
    out.loc[out.index[rows], "label"] = pred
    if BOXES_COLUMN in index.columns:
        by_class = {(img, int(lab)): boxes for img, lab, boxes in
                    zip(index["image_id"], index["label"], index[BOXES_COLUMN])}
        new_boxes = list(index[BOXES_COLUMN])
        for r, p in zip(rows, pred):
            found = by_class.get((index["image_id"].iloc[r], int(p)))
            new_boxes[r] = [list(b) for b in found] if found is not None else []
        out[BOXES_COLUMN] = new_boxes
    return out


def make_top1_index(model, crops_path, index_path, out_path, *, samples: str, n_images, seed: int, device="cpu",
                    batch_size: int = 64, preprocessing: Preprocessing = TORCHVISION) -> pd.DataFrame:
    """The rule top1: predict the evaluated samples (the first n_images of the evaluation order) and write the
    index of module docstring to `out_path` (atomically)."""
    crops, index = read_split(crops_path, index_path, mmap_mode="r")
    index = index.copy()
    index[EVAL_CANDIDATE] = candidates(index, samples)
    order = eval_order(index, seed)
    n = len(order) if n_images == "all" else int(n_images)
    if n > len(order):
        raise LayersweepError(f"config key 'data.n_images' asks for {n} evaluation samples but the test split has "
                              f"only {len(order)}{' images' if samples == 'images' else ''}.")
    ids = order[:n]
    pos = {cid: i for i, cid in enumerate(index["crop_id"])}
    rows = np.array([pos[c] for c in ids], dtype=np.int64)
    pred = predict_top1(model, np.asarray(crops[np.sort(rows)]), device=device, batch_size=batch_size,
                        preprocessing=preprocessing)
    pred = pred[np.argsort(np.argsort(rows))]  # back from row order to evaluation order
    out = top1_index(index, ids, pred)
    with atomic_path(out_path) as tmp:
        out.to_parquet(tmp, index=False)
    return out
