"""The ground-truth shapes dataset (`data.source: shapes`): one coloured shape per image on a cluttered,
partly destroyed background, with the shape's pixel mask as the ground-truth attribution.

After the generator of Domeniconi et al., "How to Evaluate and Refine your CAM" (ICPR 2026), with three
deliberate differences (docs/groundtruth.md):
- backgrounds: VOC 2007 photos (`background: voc`, needs data.voc_root) or procedurally drawn clutter
  (`procedural`; `auto` picks voc when data.voc_root holds VOC, else procedural), not the paper's book pages;
- seeds: label, colour, position, size, angle and background each come from their own random stream of
  (seed, split, index), so no property of the shape besides its geometry tells the label;
- scenes: train, val and test draw their backgrounds from disjoint pools of scenes.

Six classes: filled circle, square, triangle, then the outlines of the same three (thickness size // 5).
Sizes are drawn from three ranges given at 256 px (80-100, 40-50, 20-25) and scaled to the image size. The
shape and its mask are drawn with the same OpenCV primitive (no anti-aliasing), the image on the background,
the mask on a black canvas, so the mask is exactly the shape's pixels.

Backgrounds: each scene is destroyed once per threshold t (default 0.2 ... 0.7): the pixels where a min-max
normalised Perlin noise (8 x 8 periods) is at most t are re-filled by ROAD's noisy linear imputation
(`layersweep.metrics.road.noisy_linear_impute`, noise 0.01 on [0, 1] pixels). A sample takes one
(scene, t) of its split's pool, flipped and colour-jittered, and the shape is drawn on it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .data import INDEX_COLUMNS, write_split
from .errors import LayersweepError
from .io import atomic_path

CLASSES = ("circle", "square", "triangle", "circle_outline", "square_outline", "triangle_outline")
SPLITS = ("train", "val", "test")
BACKGROUNDS = ("auto", "voc", "procedural")
# the random streams of a sample: each property has its own, so none can tell another
STREAMS = ("label", "colour", "position", "size", "angle", "background")
EXTRA_COLUMNS = ["scene", "threshold", "size_range", "size", "angle", "colour_r", "colour_g", "colour_b",
                 "centre_x", "centre_y"]


@dataclass(frozen=True)
class ShapesSpec:
    """What the dataset depends on (config key data.shapes, plus data.crop_size and data.voc_root)."""
    image_size: int = 224
    n: dict = field(default_factory=lambda: {"train": 4096, "val": 64, "test": 600})
    scenes: dict = field(default_factory=lambda: {"train": 24, "val": 4, "test": 4})
    background: str = "auto"
    thresholds: tuple = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    size_ranges: tuple = ((80, 100), (40, 50), (20, 25))   # at 256 px
    perlin_periods: int = 8
    impute_noise: float = 0.01
    seed: int = 0
    voc_root: str | None = None


def spec_from_config(data: dict) -> ShapesSpec:
    """The ShapesSpec of config key `data` (data.shapes, data.crop_size, data.voc_root), checked: a bad value is
    one sentence naming its key."""
    given = dict(data.get("shapes") or {})
    known = {"n_train", "n_val", "n_test", "scenes", "background", "thresholds", "size_ranges", "perlin_periods",
             "impute_noise", "seed"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise LayersweepError(f"config key 'data.shapes.{unknown[0]}' is unknown; known keys: {', '.join(sorted(known))}.")
    d = ShapesSpec()
    n = {s: given.get(f"n_{s}", d.n[s]) for s in SPLITS}
    for s, v in n.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LayersweepError(f"config key 'data.shapes.n_{s}' must be a positive integer, not {v!r}.")
    scenes = dict(d.scenes, **dict(given.get("scenes") or {}))
    for s, v in scenes.items():
        if s not in SPLITS or isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LayersweepError(f"config key 'data.shapes.scenes' must map train, val and test to positive "
                                  f"integers, not {scenes!r}.")
    background = given.get("background", d.background)
    if background not in BACKGROUNDS:
        raise LayersweepError(f"config key 'data.shapes.background' is {background!r}; use one of {', '.join(BACKGROUNDS)}.")
    thresholds = tuple(given.get("thresholds", d.thresholds))
    if not thresholds or not all(isinstance(t, (int, float)) and 0 <= t < 1 for t in thresholds):
        raise LayersweepError(f"config key 'data.shapes.thresholds' must be a non-empty list of numbers in [0, 1), not {list(thresholds)!r}.")
    ranges = tuple(tuple(r) for r in given.get("size_ranges", d.size_ranges))
    if not ranges or not all(len(r) == 2 and all(isinstance(v, int) for v in r) and 4 <= r[0] < r[1] <= 128 for r in ranges):
        raise LayersweepError(f"config key 'data.shapes.size_ranges' must be a list of [low, high) integer pairs "
                              f"with 4 <= low < high <= 128 (pixels at 256 px), not {given.get('size_ranges')!r}.")
    size = data.get("crop_size", 224)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise LayersweepError(f"config key 'data.crop_size' must be an integer of at least 32 for the shapes data, not {size!r}.")
    periods = given.get("perlin_periods", d.perlin_periods)
    if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= size // 2:
        raise LayersweepError(f"config key 'data.shapes.perlin_periods' must be an integer in [1, crop_size / 2], not {periods!r}.")
    noise = given.get("impute_noise", d.impute_noise)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise LayersweepError(f"config key 'data.shapes.impute_noise' must be a number in [0, 1], not {noise!r}.")
    seed = given.get("seed", d.seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LayersweepError(f"config key 'data.shapes.seed' must be a non-negative integer, not {seed!r}.")
    return ShapesSpec(image_size=size, n=n, scenes=scenes, background=background, thresholds=thresholds,
                      size_ranges=ranges, perlin_periods=periods, impute_noise=float(noise), seed=seed,
                      voc_root=data.get("voc_root"))


# ---- random streams -----------------------------------------------------------------------------------------
def _word(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def stream(seed: int, split: str, index: int, name: str) -> np.random.Generator:
    """The generator of one property (`name`, one of STREAMS or a scene stream) of sample `index` of `split`:
    independent of every other (seed, split, index, name)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _word(split), int(index), _word(name)]))


# ---- Perlin noise and the destroyed backgrounds -------------------------------------------------------------
def perlin_noise(size: int, periods: int, rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin gradient noise (size, size) with `periods` x `periods` lattice cells (Perlin 2002's quintic
    fade), float64."""
    cells = periods
    angles = rng.uniform(0, 2 * np.pi, (cells + 1, cells + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    coords = (np.arange(size) + 0.5) * cells / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0

    def dot(oy, ox):
        g = grad[y0 + oy, x0 + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    def fade(t):
        return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3

    u, v = fade(fx), fade(fy)
    top = dot(0, 0) * (1 - u) + dot(0, 1) * u
    bottom = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return top * (1 - v) + bottom * v


def destroy(scene: np.ndarray, threshold: float, rng: np.random.Generator, *, periods: int = 8,
            noise: float = 0.01) -> np.ndarray:
    """The scene (S, S, 3) uint8 with the pixels where the min-max normalised Perlin noise is <= threshold
    re-filled by ROAD's noisy linear imputation (on [0, 1] pixels, `noise` * N(0, 1) added)."""
    import torch

    from .metrics.road import noisy_linear_impute

    size = scene.shape[0]
    p = perlin_noise(size, periods, rng)
    p = (p - p.min()) / max(p.max() - p.min(), 1e-12)
    keep = torch.from_numpy(p > threshold)[None]
    img = torch.from_numpy(scene.astype(np.float32) / 255).permute(2, 0, 1)[None]
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    out = noisy_linear_impute(img, keep, noise=noise, generators=[gen], solver="direct")[0]
    return (out.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def procedural_scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered drawing (S, S, 3) uint8: smooth colour blobs under many random line segments, ellipses and
    irregular polygons. None is a circle, square or triangle, so no clutter item looks like a class."""
    coarse = rng.uniform(40, 220, (6, 6, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255)
    img = np.ascontiguousarray(img.astype(np.uint8))
    unit = size / 256
    for _ in range(int(rng.integers(60, 90))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:  # a line segment
            p0 = tuple(int(v) for v in rng.integers(0, size, 2))
            p1 = tuple(int(v) for v in np.clip(np.array(p0) + rng.normal(0, 40 * unit, 2), 0, size - 1))
            cv2.line(img, p0, p1, colour, max(1, int(rng.integers(1, 4) * unit)))
        elif kind == 1:  # an elongated ellipse (axis ratio >= 2: never a circle)
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            a = max(2, int(rng.uniform(6, 24) * unit))
            axes = (a, max(1, int(a / rng.uniform(2, 4))))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour,
                        -1 if rng.random() < 0.5 else max(1, int(2 * unit)))
        else:  # an irregular polygon of 5-8 vertices
            centre = rng.integers(0, size, 2)
            k = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(4, 22, k) * unit
            pts = np.stack([centre[0] + rad * np.cos(ang), centre[1] + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    return img


def voc_scene(path: Path, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of a VOC photo, resized to (S, S, 3) uint8."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.6, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        return np.asarray(im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR), np.uint8)


def voc_photos(voc_root) -> list[Path]:
    """The JPEGs of VOC 2007 below voc_root, sorted (empty when there are none)."""
    if not voc_root:
        return []
    d = Path(voc_root) / "VOCdevkit" / "VOC2007" / "JPEGImages"
    return sorted(d.glob("*.jpg")) if d.is_dir() else []


def background_source(spec: ShapesSpec) -> str:
    """'voc' or 'procedural': what `background` (auto | voc | procedural) means with this data.voc_root."""
    if spec.background == "procedural":
        return "procedural"
    photos = voc_photos(spec.voc_root)
    if spec.background == "voc" and not photos:
        raise LayersweepError(f"config key 'data.shapes.background' is 'voc' but data.voc_root "
                              f"({spec.voc_root!r}) holds no VOCdevkit/VOC2007/JPEGImages/*.jpg; set it, or use "
                              f"'auto' or 'procedural'.")
    return "voc" if photos else "procedural"


def scene_pools(spec: ShapesSpec) -> dict:
    """{split: list of (S, S, 3) uint8 scenes}: disjoint per split (held-out val/test scenes). VOC photos are
    split by position in the sorted list (train first), procedural scenes by their stream."""
    source = background_source(spec)
    counts = [spec.scenes[s] for s in SPLITS]
    if source == "voc":
        photos = voc_photos(spec.voc_root)
        if len(photos) < sum(counts):
            raise LayersweepError(f"data.voc_root holds {len(photos)} VOC photos, fewer than the {sum(counts)} "
                                  f"scenes of config key 'data.shapes.scenes'.")
        order = np.random.default_rng(spec.seed).permutation(len(photos))
        pools, start = {}, 0
        for split, k in zip(SPLITS, counts):
            pools[split] = [voc_scene(photos[i], spec.image_size, stream(spec.seed, split, j, "scene"))
                            for j, i in enumerate(order[start:start + k])]
            start += k
        return pools
    return {split: [procedural_scene(spec.image_size, stream(spec.seed, split, j, "scene")) for j in range(k)]
            for split, k in zip(SPLITS, counts)}


def destroyed_backgrounds(spec: ShapesSpec, scenes: list, split: str) -> list:
    """[scene][threshold] -> (S, S, 3) uint8: each scene of a split destroyed at every threshold."""
    return [[destroy(scene, t, stream(spec.seed, split, j, f"perlin-{t}"), periods=spec.perlin_periods,
                     noise=spec.impute_noise) for t in spec.thresholds] for j, scene in enumerate(scenes)]


# ---- one sample ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeDraw:
    """What is drawn: class label, colour (RGB 0..255), centre (x, y), size, angle (degrees), size range."""
    label: int
    colour: tuple
    centre: tuple
    size: int
    angle: float
    size_range: int


def draw_properties(spec: ShapesSpec, split: str, index: int) -> ShapeDraw:
    """The shape of sample `index` of `split`, each property from its own stream (the paper's rules, at
    spec.image_size: size ranges and positions scaled from 256 px)."""
    s = spec.image_size
    scale = s / 256
    label = int(stream(spec.seed, split, index, "label").integers(len(CLASSES)))
    colour = tuple(int(c) for c in stream(spec.seed, split, index, "colour").integers(0, 256, 3))
    size_rng = stream(spec.seed, split, index, "size")
    which = int(size_rng.integers(len(spec.size_ranges)))
    lo, hi = spec.size_ranges[which]
    size = max(3, int(round(int(size_rng.integers(lo, hi)) * scale)))
    lo_s, hi_s = lo * scale, hi * scale
    pos = stream(spec.seed, split, index, "position")
    if lo > 256 // 4:  # large shapes: centre in [lo, S - lo) (paper)
        a, b = int(lo_s), int(s - lo_s)
    else:              # others: [2 lo, S - 2 hi)
        a, b = int(2 * lo_s), int(s - 2 * hi_s)
    b = max(b, a + 1)
    centre = (int(pos.integers(a, b)), int(pos.integers(a, b)))
    angle = float(stream(spec.seed, split, index, "angle").uniform(0, 360))
    return ShapeDraw(label, colour, centre, size, angle, which)


def _polygon(kind: str, centre, size: int, angle: float) -> np.ndarray:
    h = size // 2
    pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]] if kind == "square" else [[0, -h], [-h, h], [h, h]],
                   dtype=np.float64)
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.round(pts @ rot.T + np.asarray(centre)).astype(np.int32)


def draw_shape(canvas: np.ndarray, shape: ShapeDraw, colour=None) -> np.ndarray:
    """Draw `shape` on canvas (H, W, C) uint8 in place (its colour, or `colour`), with OpenCV's 8-connected,
    not anti-aliased primitives; returns canvas."""
    name = CLASSES[shape.label]
    kind = name.removesuffix("_outline")
    colour = tuple(int(c) for c in (shape.colour if colour is None else colour))
    thickness = -1 if not name.endswith("_outline") else max(1, shape.size // 5)
    if kind == "circle":
        cv2.circle(canvas, shape.centre, max(1, shape.size // 2), colour, thickness, lineType=cv2.LINE_8)
    else:
        pts = _polygon(kind, shape.centre, shape.size, shape.angle)
        if thickness < 0:
            cv2.fillPoly(canvas, [pts], colour, lineType=cv2.LINE_8)
        else:
            cv2.polylines(canvas, [pts], True, colour, thickness, lineType=cv2.LINE_8)
    return canvas


def shape_mask(shape: ShapeDraw, size: int) -> np.ndarray:
    """(S, S) uint8 {0, 1}: the shape drawn with the same primitive on a black canvas."""
    canvas = np.zeros((size, size), np.uint8)
    return draw_shape(canvas, shape, colour=(1,))


def jitter_background(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal / vertical flips, brightness (+-25 %), contrast (+-15 %) and saturation (+-15 %)."""
    img = bg.astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    img = img * rng.uniform(0.75, 1.25)
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey.mean()) * rng.uniform(0.85, 1.15) + grey.mean()
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey) * rng.uniform(0.85, 1.15) + grey
    return np.ascontiguousarray(img.clip(0, 255).round().astype(np.uint8))


def make_sample(spec: ShapesSpec, split: str, index: int, backgrounds: list):
    """(image (S, S, 3) uint8, mask (S, S) uint8, ShapeDraw, scene, threshold index) of one sample; backgrounds:
    the split's destroyed_backgrounds."""
    bg_rng = stream(spec.seed, split, index, "background")
    scene = int(bg_rng.integers(len(backgrounds)))
    t = int(bg_rng.integers(len(spec.thresholds)))
    image = jitter_background(backgrounds[scene][t], bg_rng)
    shape = draw_properties(spec, split, index)
    draw_shape(image, shape)
    return image, shape_mask(shape, spec.image_size), shape, scene, t


def sample_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def build_shapes_split(spec: ShapesSpec, split: str, backgrounds: list | None = None):
    """(images (N, S, S, 3) uint8, masks (N, S, S) uint8, index DataFrame) of one split, sorted by id (the
    VOC path's index columns, the shape's box as xmin..ymax, plus EXTRA_COLUMNS)."""
    if split not in SPLITS:
        raise LayersweepError(f"the shapes data has the splits {', '.join(SPLITS)}, not {split!r}.")
    if backgrounds is None:
        backgrounds = destroyed_backgrounds(spec, scene_pools(spec)[split], split)
    n, s = spec.n[split], spec.image_size
    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.empty((n, s, s), np.uint8)
    rows = []
    for i in range(n):
        images[i], masks[i], shape, scene, t = make_sample(spec, split, i, backgrounds)
        ys, xs = np.nonzero(masks[i])
        rows.append((sample_id(split, i), sample_id(split, i), 0, CLASSES[shape.label], shape.label,
                     int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, False, split,
                     scene, float(spec.thresholds[t]), shape.size_range, shape.size, shape.angle, *shape.colour,
                     *shape.centre))
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS + EXTRA_COLUMNS)
    return images, masks, index


def read_masks(path, n: int | None = None) -> np.ndarray:
    """The mask array (N, S, S) uint8 written by make_shapes_split, checked."""
    path = Path(path)
    if not path.is_file():
        raise LayersweepError(f"the mask file {path} does not exist; the ground-truth metrics need data.source: shapes.")
    try:
        masks = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise LayersweepError(f"the mask array {path} is corrupt or not a .npy file ({type(exc).__name__}).") from None
    if masks.ndim != 3 or masks.dtype != np.uint8 or (n is not None and len(masks) != n):
        raise LayersweepError(f"the mask array {path} has shape {masks.shape} and dtype {masks.dtype}; expected "
                              f"uint8 (N{'' if n is None else '=' + str(n)}, S, S).")
    return masks


def make_shapes_splits(spec: ShapesSpec, outputs: dict, progress: bool = True) -> None:
    """Write every split: outputs[split] = (crops_path, index_path, masks_path). All or nothing: on an error no
    output file is left."""
    from tqdm import tqdm

    paths = [p for trio in outputs.values() for p in trio]
    try:
        pools = scene_pools(spec)
        for split in tqdm(list(outputs), desc="shapes", disable=not progress):
            crops_path, index_path, masks_path = outputs[split]
            images, masks, index = build_shapes_split(spec, split,
                                                      destroyed_backgrounds(spec, pools[split], split))
            write_split(images, index, crops_path, index_path)
            with atomic_path(masks_path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, masks)
    except BaseException:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        raise


def masks_by_id(masks_path, index_path, crop_ids) -> np.ndarray:
    """The masks (k, S, S) uint8 of `crop_ids`, in that order (the split's index gives each id's row)."""
    index = pd.read_parquet(index_path, columns=["crop_id"])
    masks = read_masks(masks_path, len(index))
    pos = {c: i for i, c in enumerate(index["crop_id"].astype(str))}
    missing = [c for c in crop_ids if c not in pos]
    if missing:
        raise LayersweepError(f"sample '{missing[0]}' is not in {index_path}, so it has no mask in {masks_path}.")
    return masks[[pos[c] for c in crop_ids]]
