"""The data stage: the samples of a VOC split, plus the seeded evaluation subset and baselines.

Two kinds of sample (config key 'data.samples'), written to the same files with the same index columns:
- crops: one sample per non-difficult VOC object, the object's box resized to crop_size x crop_size. Its id
  is f"{image_id}_{object_index:02d}" with object_index the object's position among ALL the <object>
  elements of its annotation, so an id never depends on which other crops were kept or drawn.
- images: one sample per (image, class with a non-difficult object in it), the whole image resized to
  crop_size x crop_size; its id is f"{image_id}_c{label:02d}" and its `boxes` column lists every
  non-difficult box of that class, rescaled to the resized image (float [xmin, ymin, xmax, ymax], 0-based,
  half-open), for the pointing game. xmin..ymax then hold the whole image (the region the sample shows).
The column `crop_id` keeps its name in both modes: it is the stable sample id every later stage uses.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .errors import LayersweepError
from .io import atomic_path
from .voc import CLASS_TO_LABEL, annotation_path, brief, image_path, parse_annotation, read_split_ids

INDEX_COLUMNS = ["crop_id", "image_id", "object_index", "class_name", "label",
                 "xmin", "ymin", "xmax", "ymax", "truncated", "split"]
SAMPLES = ("crops", "images")
BOXES_COLUMN = "boxes"  # image mode only: the sample's class boxes in the resized image's pixel coordinates
# optional bool column: the rows the evaluation order draws from (data.target top1 in image mode keeps one row per
# image, layersweep.targets); absent = every row
EVAL_CANDIDATE = "eval_candidate"


def sample_id(image_id: str, label: int) -> str:
    """The id of an image-mode sample: one image explained for one class."""
    return f"{image_id}_c{label:02d}"


def check_samples(samples: str) -> str:
    if samples not in SAMPLES:
        raise LayersweepError(f"config key 'data.samples' has the unknown value {samples!r}; use 'crops' or 'images'.")
    return samples


def rescale_boxes(boxes, width: int, height: int, size: int, path) -> list[list[float]]:
    """0-based half-open boxes of a width x height image in the coordinates of its size x size resize."""
    out = []
    for xmin, ymin, xmax, ymax in boxes:
        if not (0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height):
            raise LayersweepError(f"The VOC annotation {path} has the box {(xmin, ymin, xmax, ymax)} (0-based, half-open), which is empty or outside the {width}x{height} image.")
        sx, sy = size / width, size / height
        out.append([xmin * sx, ymin * sy, xmax * sx, ymax * sy])
    return out


def crop_id(image_id: str, object_index: int) -> str:
    return f"{image_id}_{object_index:02d}"


def crop_object(image: Image.Image, box: tuple[int, int, int, int], crop_size: int) -> np.ndarray:
    """Crop an RGB PIL image to a 0-based half-open box and resize it to crop_size x crop_size.

    PIL's bilinear filter (Image.BILINEAR); note that PIL widens the filter when it downscales, so it
    antialiases (unlike torch's interpolate without antialias).
    """
    return np.asarray(image.crop(box).resize((crop_size, crop_size), Image.BILINEAR), dtype=np.uint8)


def build_split(voc2007_dir, split: str, crop_size: int, *, samples: str = "crops",
                progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Samples (N, S, S, 3) uint8 and their index (sorted by crop_id) of a split (module docstring).

    Index columns: crop_id, image_id, object_index, class_name, label, xmin, ymin, xmax, ymax (the region
    shown, in 0-based half-open pixel coordinates of the original image, i.e. VOC's xmin-1, ymin-1, xmax,
    ymax), truncated, split; `samples='images'` adds `boxes`, and object_index is -1 (no single object)
    and truncated says whether any of the boxes is.
    """
    if not isinstance(crop_size, (int, np.integer)) or crop_size < 1:
        raise LayersweepError(f"config key 'data.crop_size' must be a positive integer, not {crop_size!r}.")
    check_samples(samples)
    voc2007_dir = Path(voc2007_dir)
    image_ids = sorted(set(read_split_ids(voc2007_dir, split)))

    # Pass 1: annotations only (cheap), so the output array can be allocated once: a full VOC split
    # is ~2 GB of 224x224 crops and stacking a list would need twice that.
    annotations, rows = [], []
    for image_id in image_ids:
        ann = parse_annotation(annotation_path(voc2007_dir, image_id))
        if ann.image_id != image_id:  # cannot happen via annotation_path, kept as a guard
            raise LayersweepError(f"The VOC annotation {annotation_path(voc2007_dir, image_id)} does not belong to image {image_id}.")
        img_path = image_path(voc2007_dir, image_id)
        if not img_path.is_file():
            raise LayersweepError(f"The VOC image {img_path} listed in the '{split}' split does not exist.")
        kept = [o for o in ann.objects if not o.difficult]
        annotations.append((ann, kept))
        if samples == "images":
            for label in sorted({o.label for o in kept}):
                of_class = [o for o in kept if o.label == label]
                boxes = rescale_boxes([o.box for o in of_class], ann.width, ann.height, crop_size,
                                      annotation_path(voc2007_dir, image_id))
                rows.append((sample_id(image_id, label), image_id, -1, of_class[0].name, label,
                             0, 0, ann.width, ann.height, any(o.truncated for o in of_class), split, boxes))
            continue
        for o in kept:
            xmin, ymin, xmax, ymax = o.box
            rows.append((crop_id(image_id, o.index), image_id, o.index, o.name, CLASS_TO_LABEL[o.name],
                         xmin, ymin, xmax, ymax, o.truncated, split))
    columns = INDEX_COLUMNS + ([BOXES_COLUMN] if samples == "images" else [])
    index = pd.DataFrame(rows, columns=columns)
    index = index.astype({"object_index": "int64", "label": "int64", "xmin": "int64", "ymin": "int64",
                          "xmax": "int64", "ymax": "int64", "truncated": "bool"})
    index = index.sort_values("crop_id", kind="stable").reset_index(drop=True)
    if index["crop_id"].duplicated().any():
        dup = index.loc[index["crop_id"].duplicated(), "crop_id"].iloc[0]
        raise LayersweepError(f"The VOC '{split}' split of {voc2007_dir} yields the crop id {dup} twice (an image id listed twice?).")
    position = {cid: i for i, cid in enumerate(index["crop_id"])}

    # Pass 2: pixels, written straight into their sorted position.
    crops = np.empty((len(index), crop_size, crop_size, 3), dtype=np.uint8)
    for ann, kept in tqdm(annotations, desc=f"crops {split}", unit="img", disable=not progress):
        if not kept:
            continue
        img_path = image_path(voc2007_dir, ann.image_id)
        try:
            with Image.open(img_path) as im:
                image = im.convert("RGB")  # VOC holds a few grey-scale JPEGs; the model wants 3 channels
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise LayersweepError(f"The VOC image {img_path} cannot be decoded ({brief(exc)}).") from None
        if image.size != (ann.width, ann.height):
            raise LayersweepError(
                f"The VOC image {img_path} is {image.size[0]}x{image.size[1]} but its annotation "
                f"{annotation_path(voc2007_dir, ann.image_id)} says {ann.width}x{ann.height}."
            )
        if samples == "images":  # the whole image, resized as the crops are (PIL bilinear, antialiased)
            whole = crop_object(image, (0, 0, ann.width, ann.height), crop_size)
            for label in {o.label for o in kept}:
                crops[position[sample_id(ann.image_id, label)]] = whole
            continue
        for o in kept:
            crops[position[crop_id(ann.image_id, o.index)]] = crop_object(image, o.box, crop_size)
    return crops, index


def sample_boxes(index: pd.DataFrame) -> list[np.ndarray]:
    """The `boxes` column of an image-mode index as one float64 (k, 4) array per row."""
    if BOXES_COLUMN not in index.columns:
        raise LayersweepError("the test index has no 'boxes' column: boxes exist only with config key 'data.samples: images'.")
    return [np.asarray([list(b) for b in boxes], dtype=np.float64).reshape(-1, 4) for boxes in index[BOXES_COLUMN]]


def write_split(crops: np.ndarray, index: pd.DataFrame, crops_path, index_path) -> None:
    """Crops as one .npy and the index as parquet; both appear together or neither does."""
    if len(crops) != len(index):
        raise LayersweepError(f"Refusing to write {crops_path}: {len(crops)} crops but {len(index)} index rows for {index_path}.")
    try:
        # Both temporary files are complete before either is renamed into place.
        with atomic_path(crops_path) as tmp_crops, atomic_path(index_path) as tmp_index:
            with open(tmp_crops, "wb") as fh:  # a file handle keeps numpy from appending '.npy'
                np.save(fh, np.ascontiguousarray(crops, dtype=np.uint8))
            index.to_parquet(tmp_index, index=False)
    except BaseException:
        # the index is renamed first and the crops last; never leave one without the other.
        for p in (crops_path, index_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        raise


def make_split(voc2007_dir, split: str, crop_size: int, crops_path, index_path, *, samples: str = "crops",
               progress: bool = True) -> pd.DataFrame:
    """build_split then write_split (what the pipeline's crop rule runs); on bad input nothing is written."""
    crops, index = build_split(voc2007_dir, split, crop_size, samples=samples, progress=progress)
    write_split(crops, index, crops_path, index_path)
    return index


def read_split(crops_path, index_path, *, mmap_mode: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Read what write_split wrote; `mmap_mode='r'` maps the crops instead of loading them."""
    crops_path, index_path = Path(crops_path), Path(index_path)
    for p in (crops_path, index_path):
        if not p.is_file():
            raise LayersweepError(f"The crop file {p} does not exist; run the crop stage first.")
    try:
        crops = np.load(crops_path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError or EOFError on truncated or foreign files
        raise LayersweepError(f"The crop array {crops_path} is corrupt or not a .npy file ({type(exc).__name__}: {brief(exc)}).") from None
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
        raise LayersweepError(f"The crop array {crops_path} has shape {crops.shape} and dtype {crops.dtype}; expected uint8 (N, S, S, 3).")
    try:
        index = pd.read_parquet(index_path)
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError) on corrupt files
        raise LayersweepError(f"The crop index {index_path} is corrupt or not a parquet file ({type(exc).__name__}: {brief(exc)}).") from None
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise LayersweepError(f"The crop index {index_path} lacks the column(s) {', '.join(missing)}.")
    if len(index) != len(crops):
        raise LayersweepError(f"The crop index {index_path} has {len(index)} rows but the crop array {crops_path} holds {len(crops)} crops.")
    return crops, index


# --- evaluation subset and baselines ---------------------------------------------------------------

def eval_order(test_index: pd.DataFrame, seed: int) -> list[str]:
    """A seeded permutation of the test crop ids; its first n_images are the evaluation set.

    The ids are sorted first, so the order depends only on the set of ids and the seed, and raising
    n_images only appends crops. An index with the column `eval_candidate` draws from its True rows only.
    """
    if EVAL_CANDIDATE in test_index.columns:
        test_index = test_index[test_index[EVAL_CANDIDATE].astype(bool)]
    ids = sorted(test_index["crop_id"].astype(str))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in perm]


def baseline_crop_ids(train_index: pd.DataFrame, val_index: pd.DataFrame, n: int, seed: int) -> list[str]:
    """n distinct trainval crops drawn with the seed: the DeepLiftShap baseline distribution."""
    ids = sorted(pd.concat([train_index["crop_id"], val_index["crop_id"]]).astype(str).unique())
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LayersweepError(f"config key 'attribution.n_baselines' must be a positive integer, not {n!r}.")
    if n > len(ids):
        raise LayersweepError(f"config key 'attribution.n_baselines' is {n} but trainval has only {len(ids)} crops.")
    # A stream of its own, so the baselines do not mirror the evaluation order drawn with the same seed.
    rng = np.random.default_rng([seed, 1])
    return [ids[i] for i in rng.choice(len(ids), size=n, replace=False)]
