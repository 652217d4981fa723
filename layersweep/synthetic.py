"""Synthetic demo data written in the real VOCdevkit layout, so the demo runs through the same VOC reader.

Each object is an ellipse filling its box, painted with its class's texture: stripes alternating two
class-specific colours, at a class-specific orientation and frequency (in box-relative units, so a crop
resized to any size shows the same pattern), with per-object jitter, over a noisy grey background.
Colour is what a randomly initialised VGG11 picks up best, so the two colours carry most of the signal.
"""
from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import LayersweepError
from .voc import SPLITS, VOC_CLASSES

SPLIT_FRACTIONS = {"train": 0.4, "val": 0.2, "test": 0.4}  # by image; trainval = train + val
DIFFICULT_P = 0.12      # share of objects marked difficult (drawn small, as VOC's difficult ones often are)
TRUNCATED_P = 0.2       # share of objects pushed partly outside the image (their box is clipped)


def class_style(label: int) -> dict:
    """The texture of a class: two RGB colours (0..255), stripe angle (radians) and stripes per box."""
    n = len(VOC_CLASSES)
    hue_a = label / n
    hue_b = (hue_a + 0.35 + 0.3 * ((label * 7) % n) / n) % 1.0  # a second hue, far from the first
    colour_a = np.array(colorsys.hsv_to_rgb(hue_a, 0.85, 0.95)) * 255
    colour_b = np.array(colorsys.hsv_to_rgb(hue_b, 0.7, 0.45)) * 255
    return {
        "colour_a": colour_a,
        "colour_b": colour_b,
        "angle": (label % 4) * np.pi / 4,
        "stripes": (2.5, 5.0)[(label // 4) % 2],
    }


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-frequency, weakly coloured blotches plus pixel noise, float (H, W, 3) in 0..255."""
    coarse = rng.uniform(60, 200, size=(5, 5, 3))
    coarse = 0.7 * coarse.mean(axis=2, keepdims=True) + 0.3 * coarse  # mostly grey: colour belongs to objects
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR), dtype=np.float64)
    return smooth + rng.normal(0, 18, size=(height, width, 3))


def _paint(canvas: np.ndarray, rng: np.random.Generator, label: int, x0: float, y0: float, w: float, h: float) -> None:
    """Paint one object whose full (unclipped) extent is [x0, x0 + w) x [y0, y0 + h) in 0-based pixels."""
    style = class_style(label)
    height, width = canvas.shape[:2]
    c0, c1 = max(0, int(np.floor(x0))), min(width, int(np.ceil(x0 + w)))
    r0, r1 = max(0, int(np.floor(y0))), min(height, int(np.ceil(y0 + h)))
    yy, xx = np.mgrid[r0:r1, c0:c1]
    u = (xx + 0.5 - x0) / w  # box-relative coordinates in [0, 1]
    v = (yy + 0.5 - y0) / h
    inside = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    angle = style["angle"] + rng.normal(0, 0.08)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * style["stripes"] * (u * np.cos(angle) + v * np.sin(angle)) + phase)
    a = np.clip(style["colour_a"] * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)
    b = np.clip(style["colour_b"] * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)
    texture = np.where((wave > 0)[..., None], a, b) + rng.normal(0, 10, size=wave.shape + (3,))
    region = canvas[r0:r1, c0:c1]
    region[inside] = texture[inside]


def _overlap(box, boxes) -> float:
    """Largest intersection with an earlier box, as a share of the smaller box's area."""
    worst = 0.0
    x0, y0, x1, y1 = box
    for bx0, by0, bx1, by1 in boxes:
        iw, ih = min(x1, bx1) - max(x0, bx0), min(y1, by1) - max(y0, by0)
        if iw > 0 and ih > 0:
            smaller = min((x1 - x0) * (y1 - y0), (bx1 - bx0) * (by1 - by0))
            worst = max(worst, iw * ih / smaller)
    return worst


def _make_image(rng: np.random.Generator, image_size: int, labels: list[int]):
    """One image and its objects as dicts (VOC 1-based inclusive boxes)."""
    width = image_size
    height = int(round(image_size * rng.uniform(0.7, 1.0)))  # VOC images are mostly landscape
    canvas = _background(rng, width, height)
    objects, placed = [], []
    for label in labels:
        difficult = bool(rng.random() < DIFFICULT_P)
        truncated = bool(not difficult and rng.random() < TRUNCATED_P)
        scale = (0.12, 0.22) if difficult else (0.3, 0.6)
        for _ in range(30):  # keep objects mostly apart: an occluded crop shows the wrong texture
            w = max(8.0, rng.uniform(*scale) * width)
            h = max(8.0, rng.uniform(*scale) * height)
            if truncated:  # push it across one edge by 20-45% of its size
                x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
                edge = rng.integers(4)
                shift = rng.uniform(0.2, 0.45)
                if edge == 0:
                    x0 = -shift * w
                elif edge == 1:
                    x0 = width - (1 - shift) * w
                elif edge == 2:
                    y0 = -shift * h
                else:
                    y0 = height - (1 - shift) * h
            else:
                x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            # The visible box in 0-based half-open pixels, then VOC's 1-based inclusive form.
            box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
                   min(width, int(np.ceil(x0 + w))), min(height, int(np.ceil(y0 + h))))
            if _overlap(box, placed) < 0.2:
                break
        placed.append(box)
        _paint(canvas, rng, label, x0, y0, w, h)
        objects.append({
            "name": VOC_CLASSES[label],
            "bndbox": (box[0] + 1, box[1] + 1, box[2], box[3]),
            "difficult": difficult,
            "truncated": truncated,
        })
    return np.clip(canvas, 0, 255).astype(np.uint8), objects


def _annotation_xml(image_id: str, width: int, height: int, objects: list[dict]) -> ET.ElementTree:
    """The same elements, in the same order, as a VOC 2007 annotation."""
    root = ET.Element("annotation")

    def sub(parent, tag, text=None):
        el = ET.SubElement(parent, tag)
        if text is not None:
            el.text = str(text)
        return el

    sub(root, "folder", "VOC2007")
    sub(root, "filename", f"{image_id}.jpg")
    source = sub(root, "source")
    sub(source, "database", "layersweep synthetic VOC")
    sub(source, "annotation", "layersweep.synthetic")
    sub(source, "image", "synthetic")
    owner = sub(root, "owner")
    sub(owner, "name", "layersweep")
    size = sub(root, "size")
    sub(size, "width", width)
    sub(size, "height", height)
    sub(size, "depth", 3)
    sub(root, "segmented", 0)
    for obj in objects:
        el = sub(root, "object")
        sub(el, "name", obj["name"])
        sub(el, "pose", "Unspecified")
        sub(el, "truncated", int(obj["truncated"]))
        sub(el, "difficult", int(obj["difficult"]))
        bb = sub(el, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["bndbox"]):
            sub(bb, tag, value)
    tree = ET.ElementTree(root)
    ET.indent(tree, space="\t")
    return tree


def _flag(objects: list[dict], class_name: str) -> int:
    difficult = [o["difficult"] for o in objects if o["name"] == class_name]
    if not difficult:
        return -1
    return 0 if all(difficult) else 1


def _split_ids(rng: np.random.Generator, image_ids: list[str]) -> dict[str, list[str]]:
    n = len(image_ids)
    n_train, n_val = int(round(SPLIT_FRACTIONS["train"] * n)), int(round(SPLIT_FRACTIONS["val"] * n))
    perm = [image_ids[i] for i in rng.permutation(n)]
    splits = {"train": sorted(perm[:n_train]), "val": sorted(perm[n_train:n_train + n_val]),
              "test": sorted(perm[n_train + n_val:])}
    splits["trainval"] = sorted(splits["train"] + splits["val"])
    return splits


def write_synthetic_voc(root, *, n_images: int, image_size: int, seed: int) -> Path:
    """Write root/VOCdevkit/VOC2007 (images, annotations, split and per-class lists); return that directory.

    Deterministic for a seed. Written in a temporary directory beside `root` and renamed onto it when
    complete, so `root` is either absent or whole. `root` must not exist or be an empty directory.
    """
    root = Path(root)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 5:
        raise LayersweepError(f"config key 'data.synthetic.n_images' must be an integer >= 5 (every split needs an image), not {n_images!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise LayersweepError(f"config key 'data.synthetic.image_size' must be an integer >= 32, not {image_size!r}.")
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise LayersweepError(f"The synthetic VOC directory {root} already exists and is not empty; remove it first.")

    rng = np.random.default_rng(seed)
    image_ids = [f"{i + 1:06d}" for i in range(n_images)]
    n_objects = rng.integers(1, 4, size=n_images)  # 1..3 objects per image
    # Classes drawn as concatenated permutations, so every class gets about the same number of objects.
    total = int(n_objects.sum())
    stream = np.concatenate([rng.permutation(len(VOC_CLASSES)) for _ in range(-(-total // len(VOC_CLASSES)))])
    splits = _split_ids(rng, image_ids)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".part", dir=root.parent))
    try:
        voc = tmp / "VOCdevkit" / "VOC2007"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True)
        all_objects, start = {}, 0
        for image_id, k in zip(image_ids, n_objects):
            labels = [int(c) for c in stream[start:start + k]]
            start += k
            pixels, objects = _make_image(rng, image_size, labels)
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
            _annotation_xml(image_id, pixels.shape[1], pixels.shape[0], objects).write(voc / "Annotations" / f"{image_id}.xml", encoding="utf-8")
            all_objects[image_id] = objects
        main = voc / "ImageSets" / "Main"
        for split in SPLITS:
            (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in splits[split]))
            for name in VOC_CLASSES:
                # VOC's format: the flag right-aligned in two characters ("000005 -1", "000009  1").
                lines = "".join(f"{i} {_flag(all_objects[i], name):2d}\n" for i in splits[split])
                (main / f"{name}_{split}.txt").write_text(lines)
        if root.exists():
            root.rmdir()  # an empty directory (Snakemake creates directory() outputs before the job)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "VOCdevkit" / "VOC2007"
