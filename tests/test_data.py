"""The crop stage: crops and index from a VOC split, atomic files, the seeded evaluation subset and baselines."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from xml.dom import minidom

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import layersweep.data as data
from layersweep.data import (
    INDEX_COLUMNS, baseline_crop_ids, build_split, eval_order, make_split, read_split, write_split,
)
from layersweep.config import n_shards, shard_range
from layersweep.errors import LayersweepError
from layersweep.synthetic import write_synthetic_voc
from layersweep.voc import CLASS_TO_LABEL, annotation_path, image_path, read_split_ids

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voc2007-sample"
REAL_VOC = FIXTURE / "VOCdevkit" / "VOC2007"
needs_fixture = pytest.mark.skipif(
    not REAL_VOC.is_dir(), reason=f"the real VOC 2007 sample {FIXTURE} is absent (it lives in ../shared, not in a plain clone)")


def assert_one_sentence(exc, path) -> None:
    msg = str(exc)
    assert str(path) in msg, msg
    assert "\n" not in msg and msg.endswith("."), msg
    assert re.search(r"[.!?]\s+[A-Z]", msg) is None, msg


def raw_objects(voc, image_id):
    """minidom reading: [(object_index, name, (xmin, ymin, xmax, ymax) as in the XML, difficult, truncated)]."""
    dom = minidom.parse(str(annotation_path(voc, image_id)))
    out = []
    objs = [o for o in dom.documentElement.childNodes if o.nodeType == o.ELEMENT_NODE and o.tagName == "object"]
    for i, o in enumerate(objs):
        get = lambda node, tag: node.getElementsByTagName(tag)[0].firstChild.data.strip()  # noqa: E731
        box = o.getElementsByTagName("bndbox")[0]
        out.append((i, get(o, "name"), tuple(int(get(box, t)) for t in ("xmin", "ymin", "xmax", "ymax")),
                    get(o, "difficult") == "1", get(o, "truncated") == "1"))
    return out


def naive_crop(voc, image_id, vbox, size):
    """PIL crop + bilinear resize, converting VOC's 1-based inclusive box by hand."""
    xmin, ymin, xmax, ymax = vbox
    img = Image.open(image_path(voc, image_id)).convert("RGB")
    return np.array(img.crop((xmin - 1, ymin - 1, xmax, ymax)).resize((size, size), Image.BILINEAR))


def check_split(voc, split, size):
    crops, index = build_split(voc, split, size, progress=False)
    assert list(index.columns) == INDEX_COLUMNS
    assert crops.dtype == np.uint8 and crops.shape == (len(index), size, size, 3)
    assert index["crop_id"].tolist() == sorted(index["crop_id"])
    expected = []
    for image_id in sorted(read_split_ids(voc, split)):
        for i, name, vbox, difficult, truncated in raw_objects(voc, image_id):
            if not difficult:
                expected.append((f"{image_id}_{i:02d}", image_id, i, name, CLASS_TO_LABEL[name],
                                 vbox[0] - 1, vbox[1] - 1, vbox[2], vbox[3], truncated, split))
    expected = pd.DataFrame(sorted(expected), columns=INDEX_COLUMNS)
    assert index.astype(object).values.tolist() == expected.astype(object).values.tolist()
    for row, crop in zip(index.itertuples(), crops):
        vbox = (row.xmin + 1, row.ymin + 1, row.xmax, row.ymax)
        np.testing.assert_array_equal(crop, naive_crop(voc, row.image_id, vbox, size))
    return crops, index


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic_voc(tmp_path_factory.mktemp("synth") / "VOCsynthetic", n_images=30, image_size=80, seed=1)


@pytest.fixture
def synth_copy(synth, tmp_path) -> Path:
    dst = tmp_path / "VOC2007"
    shutil.copytree(synth, dst)
    return dst


# --- build_split ---------------------------------------------------------------------------------

@needs_fixture
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_build_split_on_real_voc(split):
    crops, index = check_split(REAL_VOC, split, 32)
    assert len(index) > 0


@needs_fixture
def test_real_voc_difficult_objects_left_out():
    crops, index = build_split(REAL_VOC, "val", 32, progress=False)
    nine = index[index["image_id"] == "000009"]
    assert nine["crop_id"].tolist() == ["000009_00", "000009_01", "000009_02", "000009_03"]
    assert nine["class_name"].tolist() == ["horse", "person", "person", "person"]
    # 000005 holds 5 chairs, 2 of them difficult: only 3 crops, whose ids keep the XML positions
    difficult = [i for i, *_, d, _ in raw_objects(REAL_VOC, "000005") if d]
    five = index.loc[index["image_id"] == "000005", "object_index"].tolist()
    assert len(difficult) == 2 and len(five) == 3 and not set(five) & set(difficult)
    _, test_index = build_split(REAL_VOC, "test", 32, progress=False)
    n_all = sum(len(raw_objects(REAL_VOC, i)) for i in read_split_ids(REAL_VOC, "test"))
    assert len(test_index) < n_all  # 000006 has difficult chairs


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_build_split_on_synthetic(synth, split):
    check_split(synth, split, 24)


def test_crop_of_a_square_box_is_the_pixel_slice(synth_copy):
    """When the crop size equals the box size the resize is the identity, so the crop must be exactly the
    numpy slice [ymin-1:ymax, xmin-1:xmax] of the decoded image: checks the 1-based conversion without PIL.crop."""
    image_id = read_split_ids(synth_copy, "train")[0]
    xml = annotation_path(synth_copy, image_id)
    text = re.sub(r"<bndbox>.*?</bndbox>", "<bndbox><xmin>11</xmin><ymin>7</ymin><xmax>30</xmax><ymax>26</ymax></bndbox>",
                  xml.read_text(), count=1, flags=re.S)
    text = re.sub(r"<difficult>1</difficult>", "<difficult>0</difficult>", text, count=1)
    xml.write_text(text)
    crops, index = build_split(synth_copy, "train", 20, progress=False)
    pixels = np.asarray(Image.open(image_path(synth_copy, image_id)).convert("RGB"))
    pos = index.index[index["crop_id"] == f"{image_id}_00"][0]
    np.testing.assert_array_equal(crops[pos], pixels[6:26, 10:30])


def test_greyscale_image_becomes_rgb(synth_copy):
    image_id = read_split_ids(synth_copy, "val")[0]
    Image.open(image_path(synth_copy, image_id)).convert("L").save(image_path(synth_copy, image_id))
    crops, index = build_split(synth_copy, "val", 16, progress=False)
    mine = crops[(index["image_id"] == image_id).to_numpy()]
    assert len(mine) and (mine[..., 0] == mine[..., 1]).all() and (mine[..., 1] == mine[..., 2]).all()


# --- bad input: one sentence naming the file, and no output --------------------------------------

def _first(voc, split="test"):
    return read_split_ids(voc, split)[0]


def _edit_xml(voc, image_id, pattern, repl):
    xml = annotation_path(voc, image_id)
    xml.write_text(re.sub(pattern, repl, xml.read_text(), count=1))
    return xml


BAD_INPUTS = {
    "missing image": lambda v: (image_path(v, _first(v)).unlink(), image_path(v, _first(v)))[1],
    "missing annotation": lambda v: (annotation_path(v, _first(v)).unlink(), annotation_path(v, _first(v)))[1],
    "malformed XML": lambda v: _edit_xml(v, _first(v), r"</annotation>", "</annotatio"),
    "box outside the image": lambda v: _edit_xml(v, _first(v), r"<xmax>\d+</xmax>", "<xmax>9999</xmax>"),
    "unknown class": lambda v: _edit_xml(v, _first(v), r"<name>[a-z]+</name>\s*<pose>", "<name>unicorn</name><pose>"),
    "missing split list": lambda v: (v / "ImageSets/Main/test.txt").unlink() or v / "ImageSets/Main/test.txt",
    "corrupt image": lambda v: image_path(v, _first(v)).write_bytes(b"not a jpeg") and image_path(v, _first(v)),
    "image size differs from XML": lambda v: _edit_xml(v, _first(v), r"<width>\d+</width>", "<width>81</width>"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_leaves_no_output(synth_copy, tmp_path, case):
    culprit = BAD_INPUTS[case](synth_copy)
    out = tmp_path / "results" / "data"
    crops_path, index_path = out / "test_crops.npy", out / "test.parquet"
    with pytest.raises(LayersweepError) as err:
        make_split(synth_copy, "test", 16, crops_path, index_path, progress=False)
    if case == "image size differs from XML":
        culprit = image_path(synth_copy, _first(synth_copy))  # named together with its annotation
    assert_one_sentence(err.value, culprit)
    assert not crops_path.exists() and not index_path.exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_write_leaves_neither_file(synth, tmp_path, monkeypatch):
    crops, index = build_split(synth, "val", 16, progress=False)
    crops_path, index_path = tmp_path / "val.npy", tmp_path / "val.parquet"

    def broken(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        write_split(crops, index, crops_path, index_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(LayersweepError, match="4 crops but"):
        write_split(crops[:4], index, crops_path, index_path)
    assert list(tmp_path.iterdir()) == []


# --- write_split / read_split --------------------------------------------------------------------

def test_round_trip_and_read_errors(synth, tmp_path):
    crops, index = build_split(synth, "train", 16, progress=False)
    crops_path, index_path = tmp_path / "train.npy", tmp_path / "train.parquet"
    assert make_split(synth, "train", 16, crops_path, index_path, progress=False).equals(index)
    c2, i2 = read_split(crops_path, index_path)
    np.testing.assert_array_equal(c2, crops)
    pd.testing.assert_frame_equal(i2, index)
    c3, _ = read_split(crops_path, index_path, mmap_mode="r")
    assert isinstance(c3, np.memmap) and np.array_equal(c3, crops)

    shorter = tmp_path / "short.parquet"
    index.iloc[:-1].to_parquet(shorter)
    with pytest.raises(LayersweepError, match=f"{len(index) - 1} rows") as err:
        read_split(crops_path, shorter)
    assert_one_sentence(err.value, shorter)

    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(crops_path.read_bytes()[: crops_path.stat().st_size // 2])
    for mmap in (None, "r"):
        with pytest.raises(LayersweepError, match="corrupt") as err:
            read_split(truncated, index_path, mmap_mode=mmap)
        assert_one_sentence(err.value, truncated)

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 nonsense")
    with pytest.raises(LayersweepError, match="corrupt") as err:
        read_split(crops_path, garbage)
    assert_one_sentence(err.value, garbage)

    wrong = tmp_path / "float.npy"
    np.save(wrong, crops.astype(np.float32))
    with pytest.raises(LayersweepError, match="uint8") as err:
        read_split(wrong, index_path)
    assert_one_sentence(err.value, wrong)

    with pytest.raises(LayersweepError, match="does not exist") as err:
        read_split(tmp_path / "absent.npy", index_path)
    assert_one_sentence(err.value, tmp_path / "absent.npy")


# --- evaluation subset, shards, baselines --------------------------------------------------------

def fake_index(n, start=0):
    ids = [f"{i // 3 + 1:06d}_{i % 3:02d}" for i in range(start, start + n)]
    return pd.DataFrame({"crop_id": ids, "label": np.arange(n) % 20})


def test_eval_order_depends_only_on_ids_and_seed():
    index = fake_index(50)
    order = eval_order(index, seed=0)
    assert sorted(order) == sorted(index["crop_id"]) and order != sorted(order)
    shuffled = index.sample(frac=1.0, random_state=7)
    assert eval_order(shuffled, seed=0) == order
    assert eval_order(index[["crop_id"]], seed=0) == order
    assert eval_order(index, seed=1) != order


def shard_of(order, n_images, shard_size, k):
    """Crop ids of shard k as the rules cut it (rules/common.smk, pipeline.eval_shard): shard_range over the
    seeded evaluation order."""
    return order[slice(*shard_range(k, n_images, shard_size))]


def test_shards_are_stable_when_n_images_grows():
    index, s = fake_index(50), 4
    order = eval_order(index, seed=0)
    small = [shard_of(order, 10, s, k) for k in range(n_shards(10, s))]
    large = [shard_of(order, 17, s, k) for k in range(n_shards(17, s))]
    assert [len(x) for x in small] == [4, 4, 2] and [len(x) for x in large] == [4, 4, 4, 4, 1]
    assert sum(small, []) == order[:10] and sum(large, []) == order[:17]  # the evaluation set is a prefix
    assert small[:2] == large[:2]  # full shards unchanged
    assert large[2][:2] == small[2]  # the partial shard only gains crops
    everything = [shard_of(order, len(index), 16, k) for k in range(n_shards(len(index), 16))]
    assert sum(everything, []) == order and len(everything[-1]) == 2


@needs_fixture
def test_eval_set_on_real_test_split():
    _, index = build_split(REAL_VOC, "test", 16, progress=False)
    assert sorted(eval_order(index, 0)) == index["crop_id"].tolist()


def test_baseline_crop_ids():
    train, val = fake_index(30), fake_index(12, start=30)
    a = baseline_crop_ids(train, val, 8, seed=0)
    assert len(a) == len(set(a)) == 8
    assert set(a) <= set(train["crop_id"]) | set(val["crop_id"])
    assert baseline_crop_ids(train.iloc[::-1], val, 8, seed=0) == a  # row order does not matter
    assert baseline_crop_ids(train, val, 8, seed=1) != a
    # drawn from trainval as a whole: with 42 crops and many seeds, val crops must show up
    drawn = {c for seed in range(20) for c in baseline_crop_ids(train, val, 8, seed)}
    assert drawn & set(val["crop_id"]) and drawn & set(train["crop_id"])
    assert sorted(baseline_crop_ids(train, val, 42, seed=0)) == sorted(pd.concat([train, val])["crop_id"])
    with pytest.raises(LayersweepError, match=r"'attribution\.n_baselines' is 43 but trainval has only 42"):
        baseline_crop_ids(train, val, 43, seed=0)


# --- image mode (data.samples: images) ----------------------------------------------------------------

def check_images(voc, split, size):
    """Image mode against a naive reading: minidom boxes grouped by class, rescaled by hand, PIL resize."""
    crops, index = build_split(voc, split, size, samples="images", progress=False)
    assert list(index.columns) == INDEX_COLUMNS + ["boxes"]
    assert crops.dtype == np.uint8 and crops.shape == (len(index), size, size, 3)
    expected = {}
    for image_id in sorted(read_split_ids(voc, split)):
        with Image.open(image_path(voc, image_id)) as im:
            width, height = im.size
            whole = np.array(im.convert("RGB").resize((size, size), Image.BILINEAR))
        for _, name, (xmin, ymin, xmax, ymax), difficult, truncated in raw_objects(voc, image_id):
            if difficult:
                continue
            label = CLASS_TO_LABEL[name]
            e = expected.setdefault(f"{image_id}_c{label:02d}", dict(image_id=image_id, name=name, label=label,
                                                                     boxes=[], truncated=False, pixels=whole,
                                                                     size=(width, height)))
            # VOC's 1-based inclusive box -> 0-based half-open, then scaled by size / width, size / height
            e["boxes"].append([(xmin - 1) * size / width, (ymin - 1) * size / height,
                               xmax * size / width, ymax * size / height])
            e["truncated"] |= truncated
    assert index["crop_id"].tolist() == sorted(expected)
    for row, boxes, pixels in zip(index.itertuples(), data.sample_boxes(index), crops):
        e = expected[row.crop_id]
        assert (row.image_id, row.class_name, row.label, row.object_index) == (e["image_id"], e["name"], e["label"], -1)
        assert (row.xmin, row.ymin, row.xmax, row.ymax) == (0, 0) + e["size"] and row.truncated == e["truncated"]
        np.testing.assert_allclose(boxes, np.array(e["boxes"]), rtol=0, atol=1e-9)
        assert ((boxes >= 0) & (boxes <= size)).all()
        np.testing.assert_array_equal(pixels, e["pixels"])
    return crops, index


def test_image_mode_on_synthetic(synth, tmp_path):
    _, index = check_images(synth, "test", 48)
    assert index["image_id"].duplicated().any()  # some synthetic image holds two classes: one sample each
    # written and read back through the same files as crop mode; parquet keeps the nested boxes
    make_split(synth, "test", 48, tmp_path / "test_crops.npy", tmp_path / "test.parquet", samples="images",
               progress=False)
    crops, back = read_split(tmp_path / "test_crops.npy", tmp_path / "test.parquet")
    for a, b in zip(data.sample_boxes(back), data.sample_boxes(index)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(LayersweepError, match=r"no 'boxes' column.*'data\.samples: images'"):
        data.sample_boxes(build_split(synth, "test", 48, progress=False)[1])


@needs_fixture
def test_image_mode_on_real_voc():
    _, index = check_images(REAL_VOC, "test", 40)
    assert len(index) > 0
    # 000009 (val) holds a horse and three people (non-difficult): two samples, 1 + 3 boxes
    _, val = check_images(REAL_VOC, "val", 40)
    nine = val[val["image_id"] == "000009"]
    assert nine["crop_id"].tolist() == ["000009_c12", "000009_c14"]
    assert [len(b) for b in data.sample_boxes(nine)] == [1, 3]


def test_image_mode_box_outside_the_image_names_the_file(synth_copy, tmp_path):
    image_id = sorted(read_split_ids(synth_copy, "test"))[0]
    xml = annotation_path(synth_copy, image_id)
    width = int(re.search(r"<width>(\d+)</width>", xml.read_text()).group(1))
    xml.write_text(re.sub(r"<xmax>\d+</xmax>", f"<xmax>{width + 5}</xmax>", xml.read_text(), count=1))
    out = tmp_path / "out"
    with pytest.raises(LayersweepError) as err:
        make_split(synth_copy, "test", 32, out / "test_crops.npy", out / "test.parquet", samples="images",
                   progress=False)
    assert_one_sentence(err.value, xml)
    assert "outside" in str(err.value) and not out.exists()
    with pytest.raises(LayersweepError, match=r"'data\.samples' has the unknown value 'boxes'"):
        build_split(synth_copy, "test", 32, samples="boxes")
    with pytest.raises(LayersweepError, match=r"annotation .*000\.xml has the box \(0, 0, 40, 30\)"):
        data.rescale_boxes([(0, 0, 40, 30)], 32, 32, 16, Path("x/000.xml"))
