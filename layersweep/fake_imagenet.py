"""A small fake ILSVRC2012 validation copy in either real layout (layersweep.imagenet), for the tests and the demo.

The class list is complete (1,000 classes, as the reader demands), with made-up WordNet ids n00000001..n00001000
whose sorted order is torchvision's class order and whose first synonym is torchvision's category name; the
devkit numbers them by a seeded permutation, as the real devkit's ids differ from the sorted order. A few classes
hold images: a noisy background and one or two coloured rectangles (the class's objects), with a box XML each in
the VOC format of ILSVRC2012_bbox_val_v3. Images are numbered ILSVRC2012_val_00000001.. in a shuffled class order.
"""
from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import LayersweepError
from .imagenet import BBOX_DIR, FLAT_VAL, FOLDER_VAL, GROUND_TRUTH, META_BIN, META_MAT, N_CLASSES, torchvision_categories

LAYOUTS = ("devkit", "torchvision")


def fake_wnids() -> list[str]:
    return [f"n{i + 1:08d}" for i in range(N_CLASSES)]


def _box_xml(image_id: str, wnid: str, width: int, height: int, boxes) -> ET.ElementTree:
    """ILSVRC2012_bbox_val_v3's format (VOC's elements), boxes as written in the file."""
    root = ET.Element("annotation")
    for tag, text in (("folder", "val"), ("filename", image_id)):
        ET.SubElement(root, tag).text = text
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for x0, y0, x1, y1 in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = wnid
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(bb, tag).text = str(v)
    tree = ET.ElementTree(root)
    ET.indent(tree, space="\t")
    return tree


def _image(rng, label: int, width: int, height: int, n_boxes: int, big: bool, at_edge: bool = False):
    """Pixels and the VOC-style 1-based inclusive boxes of its objects (the first may touch the border at 0)."""
    canvas = rng.normal(120, 25, size=(height, width, 3))
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=float)
    boxes = []
    for k in range(n_boxes):
        frac = rng.uniform(0.75, 0.95) if big else rng.uniform(0.25, 0.5)
        w, h = max(4, int(frac * width)), max(4, int(frac * height))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if at_edge and k == 0:
            x0 = 0
        canvas[y0:y0 + h, x0:x0 + w] = colour + rng.normal(0, 10, size=(h, w, 3))
        # 1-based inclusive, as VOC writes them; an object at the left edge is written with xmin 0, as some of
        # ImageNet's are
        boxes.append((x0 if (k == 0 and x0 == 0) else x0 + 1, y0 + 1, x0 + w, y0 + h))
    return np.clip(canvas, 0, 255).astype(np.uint8), boxes


def _meta_mat(path: Path, wnids, categories, devkit_ids) -> None:
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    n = len(wnids) + 2  # two inner synsets (num_children > 0), which the reader skips
    synsets = np.zeros((n, 1), dtype=[(f, "O") for f in fields])
    for i, (wnid, name) in enumerate(zip(wnids, categories)):
        synsets[i, 0] = (devkit_ids[i], wnid, f"{name}, fake synonym {i}", "fake", 0, np.zeros(0), 0, 1)
    for j in range(2):
        synsets[len(wnids) + j, 0] = (len(wnids) + j + 1, f"n9999999{j}", f"inner {j}", "fake", 2,
                                      np.array([1, 2]), 1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"synsets": synsets})


def write_fake_imagenet(root, *, layout: str = "devkit", n_images: int = 24, n_classes: int = 4,
                        image_size: int = 64, seed: int = 0, boxes: bool = True) -> Path:
    """Write the fake copy below `root` (absent or empty) and return it. Deterministic for a seed; every fourth
    image holds two objects, every third a large one (over half the image), so the box filter has work to do;
    every seventh has an object at the left edge, written with xmin 0."""
    import torch

    root = Path(root)
    if layout not in LAYOUTS:
        raise LayersweepError(f"unknown fake ImageNet layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    if root.exists() and any(root.iterdir()):
        raise LayersweepError(f"The fake ImageNet directory {root} already exists and is not empty; remove it first.")
    rng = np.random.default_rng(seed)
    wnids, categories = fake_wnids(), torchvision_categories()
    classes = sorted(int(c) for c in rng.choice(N_CLASSES, size=n_classes, replace=False))
    labels = [classes[i % n_classes] for i in rng.permutation(n_images)]
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".part", dir=root.parent))
    try:
        for i, label in enumerate(labels, 1):
            image_id = f"ILSVRC2012_val_{i:08d}"
            width = image_size
            height = int(round(image_size * rng.uniform(0.6, 1.0)))
            if i % 5 == 0:  # a portrait image now and then
                width, height = height, width
            pixels, obj_boxes = _image(rng, label, width, height, 2 if i % 4 == 0 else 1, big=i % 3 == 0,
                                       at_edge=i % 7 == 0)
            folder = tmp / FLAT_VAL if layout == "devkit" else tmp / FOLDER_VAL / wnids[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{image_id}.JPEG", quality=92)
            if boxes:
                (tmp / BBOX_DIR / "val").mkdir(parents=True, exist_ok=True)
                _box_xml(image_id, wnids[label], width, height, obj_boxes).write(
                    tmp / BBOX_DIR / "val" / f"{image_id}.xml", encoding="utf-8")
        if layout == "devkit":
            devkit_ids = [int(d) + 1 for d in rng.permutation(N_CLASSES)]  # devkit id of sorted class i
            _meta_mat(tmp / META_MAT, wnids, categories, devkit_ids)
            (tmp / GROUND_TRUTH).write_text("".join(f"{devkit_ids[label]}\n" for label in labels))
        else:
            wnid_to_classes = {w: (c, f"fake synonym {i}") for i, (w, c) in enumerate(zip(wnids, categories))}
            torch.save((wnid_to_classes, [wnids[label] for label in labels]), tmp / META_BIN)
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
