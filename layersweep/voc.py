"""Reader for the PASCAL VOC 2007 devkit layout (VOCdevkit/VOC2007).

Only what the pipeline needs: the split lists, the per-class lists and the object annotations.
Every bad input raises LayersweepError with one sentence that names the file at fault.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .errors import LayersweepError

# VOC's own order (alphabetical), which fixes the label of each class.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CLASS_TO_LABEL = {name: i for i, name in enumerate(VOC_CLASSES)}
SPLITS = ("train", "val", "trainval", "test")


@dataclass(frozen=True)
class VocObject:
    """One <object> of an annotation.

    `bndbox` is VOC's own box: 1-based, inclusive pixel coordinates (xmin, ymin, xmax, ymax), so a box
    covering the whole image is (1, 1, width, height). `box` converts it to 0-based, half-open
    coordinates (xmin - 1, ymin - 1, xmax, ymax): pixel columns xmin-1 .. xmax-1 inclusive, which is the
    (left, upper, right, lower) box PIL's Image.crop and numpy slicing expect.
    """

    index: int          # position among ALL <object> elements of the file (difficult ones included): a stable id
    name: str
    bndbox: tuple[int, int, int, int]
    difficult: bool
    truncated: bool
    pose: str = "Unspecified"

    @property
    def label(self) -> int:
        return CLASS_TO_LABEL[self.name]

    @property
    def box(self) -> tuple[int, int, int, int]:
        xmin, ymin, xmax, ymax = self.bndbox
        return xmin - 1, ymin - 1, xmax, ymax


@dataclass(frozen=True)
class VocAnnotation:
    image_id: str
    width: int
    height: int
    depth: int
    objects: tuple[VocObject, ...]


def brief(exc: BaseException) -> str:
    """A library's error message cut to its first clause, so it fits inside our one-sentence messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text, maxsplit=1)[0].rstrip(".")
    return text[:200]


def annotation_path(voc2007_dir, image_id: str) -> Path:
    return Path(voc2007_dir) / "Annotations" / f"{image_id}.xml"


def image_path(voc2007_dir, image_id: str) -> Path:
    return Path(voc2007_dir) / "JPEGImages" / f"{image_id}.jpg"


def split_path(voc2007_dir, split: str, class_name: str | None = None) -> Path:
    name = split if class_name is None else f"{class_name}_{split}"
    return Path(voc2007_dir) / "ImageSets" / "Main" / f"{name}.txt"


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise LayersweepError(f"The VOC {what} list {path} does not exist; check data.voc_root (it must hold VOCdevkit/VOC2007).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayersweepError(f"The VOC {what} list {path} cannot be read ({brief(exc)}).") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_split_ids(voc2007_dir, split: str) -> list[str]:
    """Image ids of ImageSets/Main/{split}.txt, in file order."""
    if split not in SPLITS:
        raise LayersweepError(f"Unknown VOC split {split!r}; use one of {', '.join(SPLITS)}.")
    path = split_path(voc2007_dir, split)
    ids = _read_lines(path, f"'{split}' split")
    for line_no, image_id in enumerate(ids, 1):
        if len(image_id.split()) != 1:
            raise LayersweepError(f"The VOC split list {path} has the malformed entry {image_id!r} (entry {line_no}); expected one image id per line.")
    return ids


def read_class_flags(voc2007_dir, class_name: str, split: str) -> dict[str, int]:
    """ImageSets/Main/{class}_{split}.txt as {image_id: flag}.

    VOC's flags: 1 = the image holds a non-difficult object of the class, 0 = only difficult ones, -1 = none.
    """
    if class_name not in CLASS_TO_LABEL:
        raise LayersweepError(f"Unknown VOC class {class_name!r}; the 20 classes are {', '.join(VOC_CLASSES)}.")
    if split not in SPLITS:
        raise LayersweepError(f"Unknown VOC split {split!r}; use one of {', '.join(SPLITS)}.")
    path = split_path(voc2007_dir, split, class_name)
    flags = {}
    for line_no, line in enumerate(_read_lines(path, f"'{class_name}_{split}' class"), 1):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("1", "0", "-1"):
            raise LayersweepError(f"The VOC class list {path} has the malformed entry {line!r} (entry {line_no}); expected 'image_id flag' with flag 1, 0 or -1.")
        flags[parts[0]] = int(parts[1])
    return flags


def _text(elem: ET.Element, tag: str, path: Path, where: str, default: str | None = None) -> str:
    child = elem.find(tag)  # direct child only: a person's <part> elements carry their own <name>/<bndbox>
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise LayersweepError(f"The VOC annotation {path} is malformed: {where} has no <{tag}>.")
    return child.text.strip()


def _int(elem: ET.Element, tag: str, path: Path, where: str, default: str | None = None) -> int:
    text = _text(elem, tag, path, where, default)
    try:
        value = float(text)
    except ValueError:
        raise LayersweepError(f"The VOC annotation {path} is malformed: <{tag}> of {where} is {text!r}, not a number.") from None
    # VOC 2007 writes integers; some VOC-format tools write decimals, so round to the nearest pixel.
    return int(round(value))


def _flag(elem: ET.Element, tag: str, path: Path, where: str) -> bool:
    # VOC 2007 always writes <difficult> and <truncated>; other VOC-format data may omit them (= 0).
    value = _int(elem, tag, path, where, default="0")
    if value not in (0, 1):
        raise LayersweepError(f"The VOC annotation {path} is malformed: <{tag}> of {where} is {value}, not 0 or 1.")
    return bool(value)


def parse_annotation(xml_path, classes=None, *, clip_boxes: bool = False) -> VocAnnotation:
    """Parse one Annotations/{id}.xml; the image id is the file's stem.

    `classes`: the class names an <object> may carry (default: the 20 VOC classes); other VOC-format data
    (ImageNet's bbox XMLs, whose names are WordNet ids) passes its own. `clip_boxes`: clip each coordinate into
    [1, size] before the check, for data whose boxes may touch 0 (ImageNet's); VOC's own are never clipped.
    """
    known = CLASS_TO_LABEL if classes is None else classes
    path = Path(xml_path)
    if not path.is_file():
        raise LayersweepError(f"The VOC annotation {path} does not exist.")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LayersweepError(f"The VOC annotation {path} is not well-formed XML ({brief(exc)}).") from None
    except OSError as exc:
        raise LayersweepError(f"The VOC annotation {path} cannot be read ({brief(exc)}).") from None
    if root.tag != "annotation":
        raise LayersweepError(f"The VOC annotation {path} is malformed: its root element is <{root.tag}>, not <annotation>.")
    size = root.find("size")
    if size is None:
        raise LayersweepError(f"The VOC annotation {path} is malformed: it has no <size>.")
    width, height = _int(size, "width", path, "<size>"), _int(size, "height", path, "<size>")
    depth = _int(size, "depth", path, "<size>", default="3")
    if width <= 0 or height <= 0:
        raise LayersweepError(f"The VOC annotation {path} gives the image size {width}x{height}, which is empty.")

    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object {index}"
        name = _text(obj, "name", path, where)
        if name not in known:
            if classes is None:
                raise LayersweepError(f"The VOC annotation {path} names the unknown class {name!r} ({where}); the 20 VOC classes are {', '.join(VOC_CLASSES)}.")
            raise LayersweepError(f"The annotation {path} names the unknown class {name!r} ({where}), which is not in the class index.")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise LayersweepError(f"The VOC annotation {path} is malformed: {where} has no <bndbox>.")
        box = tuple(_int(bndbox, tag, path, f"the <bndbox> of {where}") for tag in ("xmin", "ymin", "xmax", "ymax"))
        if clip_boxes:
            box = (min(max(box[0], 1), width), min(max(box[1], 1), height),
                   min(max(box[2], 1), width), min(max(box[3], 1), height))
        xmin, ymin, xmax, ymax = box
        # 1-based inclusive: a valid box has 1 <= min <= max <= size (min == max is a one-pixel box).
        if not (1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height):
            raise LayersweepError(
                f"The VOC annotation {path} has the box (xmin, ymin, xmax, ymax) = {box} for {where} ({name}), "
                f"which is empty or outside the {width}x{height} image (VOC boxes are 1-based and inclusive)."
            )
        objects.append(VocObject(
            index=index, name=name, bndbox=box,
            difficult=_flag(obj, "difficult", path, where), truncated=_flag(obj, "truncated", path, where),
            pose=_text(obj, "pose", path, where, default="Unspecified"),
        ))
    return VocAnnotation(path.stem, width, height, depth, tuple(objects))


def class_flag(annotation: VocAnnotation, class_name: str) -> int:
    """VOC's per-class list flag for one image: 1, 0 (difficult objects only) or -1."""
    difficult = [o.difficult for o in annotation.objects if o.name == class_name]
    if not difficult:
        return -1
    return 0 if all(difficult) else 1
