"""The synthetic demo data: real VOCdevkit layout, readable by our VOC reader, deterministic, atomic, learnable."""
from __future__ import annotations

import filecmp
from pathlib import Path
from xml.dom import minidom

import numpy as np
import pytest
from PIL import Image

import layersweep.synthetic as synthetic
from layersweep.data import build_split
from layersweep.errors import LayersweepError
from layersweep.voc import VOC_CLASSES, annotation_path, image_path, parse_annotation, read_class_flags, read_split_ids

N_IMAGES, IMAGE_SIZE = 60, 96


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "VOCsynthetic"
    out = synthetic.write_synthetic_voc(root, n_images=N_IMAGES, image_size=IMAGE_SIZE, seed=3)
    assert out == root / "VOCdevkit" / "VOC2007"
    return out


def all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_layout_is_vocdevkit(voc):
    ids = [f"{i:06d}" for i in range(1, N_IMAGES + 1)]
    assert sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg")) == ids
    assert sorted(p.stem for p in (voc / "Annotations").glob("*.xml")) == ids
    lists = {p.name for p in (voc / "ImageSets" / "Main").glob("*.txt")}
    assert lists == {f"{s}.txt" for s in ("train", "val", "trainval", "test")} | {
        f"{c}_{s}.txt" for c in VOC_CLASSES for s in ("train", "val", "trainval", "test")}
    xml = minidom.parse(str(annotation_path(voc, "000001")))
    for tag in ("folder", "filename", "source", "size", "segmented", "object", "pose", "truncated", "difficult", "bndbox"):
        assert xml.getElementsByTagName(tag), tag
    assert xml.getElementsByTagName("filename")[0].firstChild.data == "000001.jpg"


def test_splits_are_40_20_40_by_image(voc):
    s = {k: read_split_ids(voc, k) for k in ("train", "val", "trainval", "test")}
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (24, 12, 24)  # 60 images
    assert s["trainval"] == sorted(s["train"] + s["val"])
    assert not set(s["trainval"]) & set(s["test"])
    assert all(v == sorted(v) for v in s.values())


def test_annotations_parse_and_match_the_images(voc):
    counts, n_difficult, n_truncated, names = [], 0, 0, []
    for i in range(1, N_IMAGES + 1):
        ann = parse_annotation(annotation_path(voc, f"{i:06d}"))
        with Image.open(image_path(voc, ann.image_id)) as im:
            assert im.size == (ann.width, ann.height) and im.mode == "RGB"
        assert ann.width == IMAGE_SIZE and 0.7 * IMAGE_SIZE - 1 <= ann.height <= IMAGE_SIZE
        counts.append(len(ann.objects))
        for o in ann.objects:
            n_difficult += o.difficult
            n_truncated += o.truncated
            names.append(o.name)
            if o.truncated:  # a truncated object runs off the image, so its box touches an edge
                xmin, ymin, xmax, ymax = o.bndbox
                assert xmin == 1 or ymin == 1 or xmax == ann.width or ymax == ann.height
    assert min(counts) == 1 and max(counts) == 3
    assert 0 < n_difficult < len(names) / 3 and 0 < n_truncated < len(names) / 2
    assert set(names) == set(VOC_CLASSES)
    per_class = np.bincount([VOC_CLASSES.index(n) for n in names], minlength=20)
    assert per_class.max() - per_class.min() <= 1  # classes drawn as concatenated permutations


def test_per_class_flags_follow_vocs_rule(voc):
    """Checked against a minidom reading of the XML, not against the writer's own helper."""
    seen = set()
    for split in ("train", "val", "trainval", "test"):
        ids = read_split_ids(voc, split)
        for name in VOC_CLASSES:
            flags = read_class_flags(voc, name, split)
            assert list(flags) == ids
            for image_id, flag in flags.items():
                dom = minidom.parse(str(annotation_path(voc, image_id)))
                mine = [o.getElementsByTagName("difficult")[0].firstChild.data == "1"
                        for o in dom.getElementsByTagName("object")
                        if o.getElementsByTagName("name")[0].firstChild.data == name]
                assert flag == (-1 if not mine else (0 if all(mine) else 1))
                seen.add(flag)
    assert seen == {-1, 0, 1}
    # VOC's text format: the flag right-aligned in two characters
    line = (voc / "ImageSets" / "Main" / "cat_test.txt").read_text().splitlines()[0]
    assert len(line) == 9 and line[6] == " "


def test_deterministic_for_a_seed(tmp_path):
    a = synthetic.write_synthetic_voc(tmp_path / "a", n_images=12, image_size=64, seed=5)
    b = synthetic.write_synthetic_voc(tmp_path / "b", n_images=12, image_size=64, seed=5)
    c = synthetic.write_synthetic_voc(tmp_path / "c", n_images=12, image_size=64, seed=6)
    files = all_files(a)
    assert files == all_files(b) == all_files(c)
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(a, c, [f"JPEGImages/{i:06d}.jpg" for i in range(1, 13)], shallow=False)
    assert mismatch


def test_written_atomically(tmp_path, monkeypatch):
    root = tmp_path / "VOCsynthetic"
    calls = []
    real = synthetic._annotation_xml

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(synthetic, "_annotation_xml", failing)
    with pytest.raises(RuntimeError):
        synthetic.write_synthetic_voc(root, n_images=10, image_size=64, seed=0)
    assert not root.exists() and list(tmp_path.iterdir()) == []  # no temp directory left behind
    monkeypatch.setattr(synthetic, "_annotation_xml", real)

    root.mkdir()  # Snakemake creates a directory() output before the job: an empty one is fine
    synthetic.write_synthetic_voc(root, n_images=10, image_size=64, seed=0)
    assert (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").is_file()
    with pytest.raises(LayersweepError, match="already exists and is not empty") as err:
        synthetic.write_synthetic_voc(root, n_images=10, image_size=64, seed=0)
    assert str(root) in str(err.value)


@pytest.mark.parametrize("kwargs, key", [
    ({"n_images": 4, "image_size": 64}, "data.synthetic.n_images"),
    ({"n_images": 10, "image_size": 16}, "data.synthetic.image_size"),
])
def test_bad_arguments(tmp_path, kwargs, key):
    with pytest.raises(LayersweepError, match=key.replace(".", r"\.")):
        synthetic.write_synthetic_voc(tmp_path / "x", seed=0, **kwargs)
    assert not (tmp_path / "x").exists()


def test_class_signal_in_crops(voc):
    """A nearest-centroid rule on crude colour histograms of the 64x64 crops, fitted on train+val,
    labels test crops far above chance (1/20): each class carries a visual signal."""
    def features(split):
        crops, index = build_split(voc, split, 64, progress=False)
        q = crops.astype(np.int64) // 64  # 4 levels per channel -> 64 joint colour bins
        bins = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
        hist = np.stack([np.bincount(b.ravel(), minlength=64) for b in bins]).astype(float)
        return hist / hist.sum(1, keepdims=True), index["label"].to_numpy()

    xs, ys = zip(*(features(s) for s in ("train", "val")))
    x_fit, y_fit = np.concatenate(xs), np.concatenate(ys)
    x_test, y_test = features("test")
    classes = np.unique(y_fit)
    centroids = np.stack([x_fit[y_fit == c].mean(0) for c in classes])
    pred = classes[np.argmin(((x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (pred == y_test).mean() > 0.5
