"""ILSVRC2012 validation images as a data source (config key 'data.source: imagenet'), read from a local copy.

Nothing is downloaded (ImageNet needs an account). `data.imagenet_root` holds one of two layouts (docs/imagenet.md):
- devkit: ILSVRC2012_img_val/ILSVRC2012_val_<8 digits>.JPEG (flat) and ILSVRC2012_devkit_t12/data/ with meta.mat
  and ILSVRC2012_validation_ground_truth.txt (the devkit's own 1-based class ids, one line per val image);
- torchvision: meta.bin (what torchvision.datasets.ImageNet writes: ({wnid: names}, [wnid of each val image]))
  and val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG.
Either may hold ILSVRC2012_bbox_val_v3/ (the val box XMLs, VOC format, directly or in its val/ folder), read
with the VOC parser (layersweep.voc.parse_annotation).

The class index is the WordNet ids sorted, which is torchvision's order (ImageFolder sorts the class folders)
and so the order of torchvision's ImageNet weights; it is checked against their meta["categories"].

One sample per selected val image: its id is the image's ("ILSVRC2012_val_00000001"), its label the index of its
class, and, when boxes are read, `boxes` lists the boxes of that class in the transformed image's pixels (0-based,
half-open floats), as the VOC image mode does (layersweep.data).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .data import BOXES_COLUMN, INDEX_COLUMNS, write_split
from .errors import LayersweepError
from .voc import brief, parse_annotation

N_CLASSES = 1000
DEVKIT_DATA = Path("ILSVRC2012_devkit_t12") / "data"
META_MAT = DEVKIT_DATA / "meta.mat"
GROUND_TRUTH = DEVKIT_DATA / "ILSVRC2012_validation_ground_truth.txt"
FLAT_VAL = Path("ILSVRC2012_img_val")
META_BIN = Path("meta.bin")
FOLDER_VAL = Path("val")
BBOX_DIR = Path("ILSVRC2012_bbox_val_v3")
IMAGE_ID = re.compile(r"^ILSVRC2012_val_(\d{8})$")
DRAWS = ("seeded", "numpy_legacy")
BOX_FILTERS = (None, "single_box_max_area")
RESIZES = ("resize", "resize_center_crop")
# torchvision's class names are the devkit's synonyms but for a few spellings; more differences than this mean
# the index is another one (a permutation, another class list)
MAX_NAME_DIFFERENCES = 20

EXPECTED = (f"either the devkit layout ({FLAT_VAL}/*.JPEG, {META_MAT} and {GROUND_TRUTH}) or torchvision's "
            f"ImageNet layout ({META_BIN} and {FOLDER_VAL}/<wnid>/*.JPEG)")


@dataclass(frozen=True)
class ImageNetVal:
    """What the reader found below data.imagenet_root."""
    root: Path
    layout: str                       # "devkit" | "torchvision"
    wnids: tuple                      # the class index: WordNet ids sorted (torchvision's order)
    names: tuple                      # each class's synonyms (tuples of str)
    images: dict                      # image id -> image path, ids sorted
    labels: dict                      # image id -> class index
    bbox_dir: Path | None             # the folder of the val box XMLs, None if absent

    def class_name(self, label: int) -> str:
        return self.names[label][0]


# ---- reading the two layouts --------------------------------------------------------------------------------

def _class_index(wnid_to_names: dict, source: Path) -> tuple[tuple, tuple]:
    if len(wnid_to_names) != N_CLASSES:
        raise LayersweepError(f"The ImageNet class list {source} holds {len(wnid_to_names)} classes, not 1000; "
                              "check config key 'data.imagenet_root' (the ILSVRC2012 classification classes).")
    wnids = tuple(sorted(wnid_to_names))
    return wnids, tuple(tuple(wnid_to_names[w]) for w in wnids)


def _read_meta_mat(path: Path) -> tuple[dict, dict]:
    """({wnid: synonyms}, {devkit id: wnid}) of the 1,000 leaf synsets of meta.mat (torchvision's parse_meta_mat)."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
        rows = [tuple(s)[:5] for s in synsets]
    except Exception as exc:  # scipy raises several types on a foreign or truncated file
        raise LayersweepError(f"The ImageNet devkit file {path} cannot be read as the devkit's meta.mat "
                              f"({type(exc).__name__}: {brief(exc)}).") from None
    leaves = [r for r in rows if int(r[4]) == 0]
    id_to_wnid = {int(r[0]): str(r[1]) for r in leaves}
    names = {str(r[1]): tuple(n.strip() for n in str(r[2]).split(",")) for r in leaves}
    if sorted(id_to_wnid) != list(range(1, len(leaves) + 1)):
        raise LayersweepError(f"The ImageNet devkit file {path} numbers its classes other than 1..{len(leaves)}; "
                              "it is not the ILSVRC2012 devkit's meta.mat.")
    return names, id_to_wnid


def _read_devkit(root: Path) -> tuple[dict, dict, dict]:
    names, id_to_wnid = _read_meta_mat(root / META_MAT)
    wnids, _ = _class_index(names, root / META_MAT)
    label_of = {w: i for i, w in enumerate(wnids)}
    lines = (root / GROUND_TRUTH).read_text().split()
    images, labels = {}, {}
    for i, text in enumerate(lines, 1):
        if not text.isdigit() or int(text) not in id_to_wnid:
            raise LayersweepError(f"The ImageNet ground truth {root / GROUND_TRUTH} has the entry {text!r} on line "
                                  f"{i}, not a class id of {root / META_MAT} (1..{len(id_to_wnid)}).")
        image_id = f"ILSVRC2012_val_{i:08d}"
        images[image_id] = root / FLAT_VAL / f"{image_id}.JPEG"
        labels[image_id] = label_of[id_to_wnid[int(text)]]
    missing = [p for p in images.values() if not p.is_file()]
    if missing:
        raise LayersweepError(f"The ImageNet val image {missing[0]} listed in {root / GROUND_TRUTH} does not exist "
                              f"({len(missing)} of {len(images)} are missing); check config key 'data.imagenet_root'.")
    return names, images, labels


def _read_torchvision(root: Path) -> tuple[dict, dict, dict]:
    import torch

    try:
        wnid_to_names, _val_wnids = torch.load(root / META_BIN, weights_only=True)
        wnid_to_names = {str(w): tuple(n) if isinstance(n, (tuple, list)) else (str(n),)
                         for w, n in dict(wnid_to_names).items()}
    except Exception as exc:
        raise LayersweepError(f"The ImageNet file {root / META_BIN} cannot be read as torchvision's meta.bin "
                              f"({type(exc).__name__}: {brief(exc)}).") from None
    wnids, _ = _class_index(wnid_to_names, root / META_BIN)
    label_of = {w: i for i, w in enumerate(wnids)}
    images, labels = {}, {}
    for folder in sorted(p for p in (root / FOLDER_VAL).iterdir() if p.is_dir()):
        if folder.name not in label_of:
            raise LayersweepError(f"The ImageNet val folder {folder} is not a class of {root / META_BIN} (a WordNet "
                                  "id such as n01440764).")
        for path in sorted(folder.iterdir()):
            if IMAGE_ID.match(path.stem) and path.suffix.lower() in (".jpeg", ".jpg", ".png"):
                if path.stem in images:
                    raise LayersweepError(f"The ImageNet val image {path.stem} is in two class folders "
                                          f"({images[path.stem].parent} and {folder}).")
                images[path.stem], labels[path.stem] = path, label_of[folder.name]
    images = dict(sorted(images.items()))
    return wnid_to_names, images, labels


def _bbox_dir(root: Path) -> Path | None:
    base = root / BBOX_DIR
    if (base / "val").is_dir():  # the archive ILSVRC2012_bbox_val_v3.tgz unpacks into val/
        return base / "val"
    return base if base.is_dir() else None


def check_categories(names, categories, source) -> None:
    """The class index against torchvision's ImageNet weights' meta["categories"] (same order): each category is
    one of its class's synonyms, but for at most MAX_NAME_DIFFERENCES spellings. Else one sentence."""
    if len(categories) != len(names):
        raise LayersweepError(f"The ImageNet class index of {source} has {len(names)} classes but torchvision's "
                              f"ImageNet weights have {len(categories)}.")
    differ = [i for i, (syn, cat) in enumerate(zip(names, categories))
              if cat.lower() not in {s.lower() for s in syn}]
    if len(differ) > MAX_NAME_DIFFERENCES:
        i = differ[0]
        raise LayersweepError(f"The ImageNet class index of {source} does not match torchvision's class order: "
                              f"class {i} is '{', '.join(names[i])}' where torchvision's weights have "
                              f"'{categories[i]}' ({len(differ)} classes differ).")


def torchvision_categories() -> list[str]:
    """The 1,000 class names of torchvision's ImageNet weights, in their output order (no download)."""
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def read_imagenet_val(root, *, need_boxes: bool = False) -> ImageNetVal:
    """The val images, their labels and the class index below `root` (either layout); one sentence naming the
    config key and the expected files if something is missing."""
    if root is None:
        raise LayersweepError(f"config key 'data.imagenet_root' is not set; point it at a local ILSVRC2012 copy "
                              f"holding {EXPECTED}.")
    root = Path(root)
    if not root.is_dir():
        raise LayersweepError(f"config key 'data.imagenet_root' is '{root}', which is not a directory; it must hold "
                              f"{EXPECTED}.")
    if (root / META_BIN).is_file() and (root / FOLDER_VAL).is_dir():
        layout, (names, images, labels) = "torchvision", _read_torchvision(root)
    elif (root / FLAT_VAL).is_dir() or (root / DEVKIT_DATA).is_dir():
        missing = [p for p in (FLAT_VAL, META_MAT, GROUND_TRUTH) if not (root / p).exists()]
        if missing:
            raise LayersweepError(f"config key 'data.imagenet_root' is '{root}', which lacks {missing[0]} of the "
                                  f"devkit layout ({FLAT_VAL}/*.JPEG, {META_MAT}, {GROUND_TRUTH}).")
        layout, (names, images, labels) = "devkit", _read_devkit(root)
    else:
        raise LayersweepError(f"config key 'data.imagenet_root' is '{root}', which holds neither layout; it must "
                              f"hold {EXPECTED}.")
    if not images:
        raise LayersweepError(f"config key 'data.imagenet_root' is '{root}', whose {layout} layout holds no val image.")
    wnids, synonyms = _class_index(names, root / (META_BIN if layout == "torchvision" else META_MAT))
    check_categories(synonyms, torchvision_categories(), root)
    bbox_dir = _bbox_dir(root)
    if need_boxes and bbox_dir is None:
        raise LayersweepError(f"config key 'data.imagenet_root' is '{root}', which lacks {BBOX_DIR}/ (the val box "
                              "XMLs of ILSVRC2012_bbox_val_v3.tgz), needed by the pointing game and data.imagenet.box_filter.")
    return ImageNetVal(root, layout, wnids, synonyms, images, labels, bbox_dir)


def image_boxes(val: ImageNetVal, image_id: str) -> tuple[int, int, dict]:
    """(width, height, {class index: [0-based half-open boxes]}) of one val image, from its box XML."""
    path = val.bbox_dir / f"{image_id}.xml"
    if not path.is_file():
        raise LayersweepError(f"The ImageNet box file {path} does not exist; {BBOX_DIR} must hold one XML per val image.")
    ann = parse_annotation(path, set(val.wnids), clip_boxes=True)
    label_of = {w: i for i, w in enumerate(val.wnids)}
    boxes: dict = {}
    for o in ann.objects:
        boxes.setdefault(label_of[o.name], []).append(o.box)
    return ann.width, ann.height, boxes


# ---- selection ------------------------------------------------------------------------------------------------

def single_box_max_area(width: int, height: int, boxes: list, max_area: float) -> bool:
    """Shap-CAM Table 3's filter: exactly one box of the target class, covering at most `max_area` of the image."""
    if len(boxes) != 1:
        return False
    x0, y0, x1, y1 = boxes[0]
    return (x1 - x0) * (y1 - y0) <= max_area * width * height


def dataset_order(val: ImageNetVal) -> list[str]:
    """The image ids in torchvision's ImageNet('val') order: by class index, then file name (ImageFolder's)."""
    return sorted(val.images, key=lambda i: (val.labels[i], val.images[i].name))


def candidate_ids(val: ImageNetVal, box_filter: str | None, max_area: float) -> list[str]:
    """The images a draw picks from, in torchvision's dataset order: all, or those passing the box filter."""
    order = dataset_order(val)
    if box_filter is None:
        return order
    if box_filter not in BOX_FILTERS:
        raise LayersweepError(f"config key 'data.imagenet.box_filter' has the unknown value {box_filter!r}; use "
                              "null or 'single_box_max_area'.")
    kept = []
    for image_id in order:
        width, height, boxes = image_boxes(val, image_id)
        if single_box_max_area(width, height, boxes.get(val.labels[image_id], []), max_area):
            kept.append(image_id)
    return kept


def draw(candidates: list[str], n, *, how: str, seed: int) -> list[str]:
    """The selected ids, in draw order.

    seeded: numpy's default_rng(seed) permutation of the candidates sorted by id, its first n (a larger n only
    adds images); numpy_legacy: np.random.seed(seed) then np.random.choice(len, n, replace=False) over the
    candidates in dataset order, the draw of the report's sequel (seed 123 there).
    """
    if how not in DRAWS:
        raise LayersweepError(f"config key 'data.imagenet.draw' has the unknown value {how!r}; use one of {', '.join(DRAWS)}.")
    total = len(candidates)
    n = total if n == "all" else int(n)
    if n > total:
        raise LayersweepError(f"config key 'data.n_images' asks for {n} ImageNet val images but only {total} pass "
                              "the selection (data.imagenet.box_filter).")
    if how == "seeded":
        ids = sorted(candidates)
        return [ids[i] for i in np.random.default_rng(seed).permutation(total)[:n]]
    state = np.random.get_state()  # the legacy global generator: leave it as it was
    try:
        np.random.seed(seed)
        picked = np.random.choice(total, n, replace=False)
    finally:
        np.random.set_state(state)
    return [candidates[i] for i in picked]


def split_ids(val: ImageNetVal, split: str, settings: dict) -> list[str]:
    """The ids of a split: test = the evaluated draw; train and val = `n_baselines` other val images each (the
    DeepLiftShap baseline pool; ImageNet models have no head to train)."""
    candidates = candidate_ids(val, settings.get("box_filter"), settings.get("max_box_area", 0.5))
    test = draw(candidates, settings["n_images"], how=settings.get("draw", "seeded"), seed=settings.get("seed", 0))
    if split == "test":
        return test
    rest = sorted(set(val.images) - set(test))
    k = int(settings["n_baselines"])
    if 2 * k > len(rest):
        raise LayersweepError(f"config key 'attribution.n_baselines' is {k} but only {len(rest)} ImageNet val images "
                              "are left beside the evaluated ones for the two baseline splits.")
    picked = [rest[i] for i in np.random.default_rng([int(settings.get("seed", 0)), 2]).permutation(len(rest))[:2 * k]]
    return sorted(picked[:k] if split == "train" else picked[k:])


# ---- preprocessing ------------------------------------------------------------------------------------------

def transform_geometry(width: int, height: int, size: int, resize: str) -> tuple[float, float, float, float]:
    """(sx, sy, left, top): the image is scaled by (sx, sy), then the size x size window at (left, top) is kept.

    resize: the whole image to size x size (aspect not kept); resize_center_crop: torchvision's evaluation transform,
    shorter side to round(size * 256 / 224) (256 for 224), then the centre size x size (CenterCrop's rounding)."""
    if resize == "resize":
        return size / width, size / height, 0.0, 0.0
    if resize != "resize_center_crop":
        raise LayersweepError(f"config key 'data.imagenet.resize' has the unknown value {resize!r}; use one of {', '.join(RESIZES)}.")
    short = int(round(size * 256 / 224))
    # torchvision's Resize(int): the shorter side to `short`, the longer scaled and truncated
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return new_w / width, new_h / height, float(left), float(top)


def transform_image(image: Image.Image, size: int, resize: str) -> np.ndarray:
    """RGB uint8 (size, size, 3): PIL's bilinear resize (antialiased, as torchvision's on PIL images), then the crop."""
    sx, sy, left, top = transform_geometry(image.width, image.height, size, resize)
    new = (int(round(image.width * sx)), int(round(image.height * sy)))
    resized = image.resize(new, Image.BILINEAR)
    return np.asarray(resized.crop((int(left), int(top), int(left) + size, int(top) + size)), dtype=np.uint8)


def transform_boxes(boxes, width: int, height: int, size: int, resize: str) -> list[list[float]]:
    """0-based half-open boxes of a width x height image in the transformed image's pixels: scaled, shifted by the
    crop, clipped to it; a box the crop leaves out entirely is dropped."""
    sx, sy, left, top = transform_geometry(width, height, size, resize)
    out = []
    for x0, y0, x1, y1 in boxes:
        b = [min(max(x0 * sx - left, 0.0), size), min(max(y0 * sy - top, 0.0), size),
             min(max(x1 * sx - left, 0.0), size), min(max(y1 * sy - top, 0.0), size)]
        if b[0] < b[2] and b[1] < b[3]:
            out.append(b)
    return out


# ---- the data stage -----------------------------------------------------------------------------------------

def build_imagenet_split(root, split: str, crop_size: int, settings: dict) -> tuple[np.ndarray, pd.DataFrame]:
    """Samples (N, S, S, 3) uint8 and their index (sorted by id) of one split (split_ids), in layersweep.data's
    format. settings: n_images, n_baselines, draw, seed, box_filter, max_box_area, resize, need_boxes."""
    need_boxes = bool(settings.get("need_boxes")) or settings.get("box_filter") is not None
    val = read_imagenet_val(root, need_boxes=need_boxes)
    resize = settings.get("resize", "resize")
    ids = sorted(split_ids(val, split, settings))
    crops = np.empty((len(ids), crop_size, crop_size, 3), dtype=np.uint8)
    rows = []
    for i, image_id in enumerate(ids):
        path = val.images[image_id]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")  # a few val images are greyscale or CMYK
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise LayersweepError(f"The ImageNet val image {path} cannot be decoded ({brief(exc)}).") from None
        crops[i] = transform_image(image, crop_size, resize)
        label = val.labels[image_id]
        sx, sy, left, top = transform_geometry(image.width, image.height, crop_size, resize)
        shown = (int(round(left / sx)), int(round(top / sy)),
                 int(round((left + crop_size) / sx)), int(round((top + crop_size) / sy)))
        row = [image_id, image_id, -1, val.wnids[label], label, *shown, False, split]
        if val.bbox_dir is not None:
            width, height, by_class = image_boxes(val, image_id)
            if (width, height) != image.size:
                raise LayersweepError(f"The ImageNet val image {path} is {image.width}x{image.height} but its box file "
                                      f"{val.bbox_dir / (image_id + '.xml')} says {width}x{height}.")
            row.append(transform_boxes(by_class.get(label, []), width, height, crop_size, resize))
        rows.append(row)
    columns = INDEX_COLUMNS + ([BOXES_COLUMN] if val.bbox_dir is not None else [])
    index = pd.DataFrame(rows, columns=columns).astype(
        {"object_index": "int64", "label": "int64", "xmin": "int64", "ymin": "int64", "xmax": "int64",
         "ymax": "int64", "truncated": "bool"})
    return crops, index


def make_imagenet_split(root, split: str, crop_size: int, crops_path, index_path, settings: dict) -> pd.DataFrame:
    """build_imagenet_split then write_split (the crop rule with data.source imagenet); nothing on bad input."""
    crops, index = build_imagenet_split(root, split, crop_size, settings)
    write_split(crops, index, crops_path, index_path)
    return index
