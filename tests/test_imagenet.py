"""data.source imagenet: the reader of a local ILSVRC2012 val copy (both layouts) on a fake tree written here,
the selection rules against naive loops and torchvision's own dataset order, the transform of images and boxes
against torchvision's transforms, and the bad-input sentences."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from layersweep.config import check_data_model
from layersweep.errors import LayersweepError
from layersweep.fake_imagenet import fake_wnids, write_fake_imagenet
from layersweep.imagenet import (BBOX_DIR, GROUND_TRUTH, META_BIN, build_imagenet_split, candidate_ids, draw,
                                 image_boxes, make_imagenet_split, read_imagenet_val, split_ids, transform_boxes,
                                 transform_geometry, transform_image, torchvision_categories)

N_FAKE = 30
SETTINGS = dict(n_images=6, n_baselines=2, draw="seeded", seed=0, box_filter=None, max_box_area=0.5,
                resize="resize", need_boxes=True)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet")
    return {layout: write_fake_imagenet(base / layout, layout=layout, n_images=N_FAKE, image_size=48, seed=3)
            for layout in ("devkit", "torchvision")}


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


# ---- reading ---------------------------------------------------------------------------------------------------

def test_both_layouts_give_the_same_images_labels_and_torchvisions_class_order(trees):
    dev, tv = read_imagenet_val(trees["devkit"]), read_imagenet_val(trees["torchvision"])
    assert (dev.layout, tv.layout) == ("devkit", "torchvision")
    assert list(dev.images) == list(tv.images) == [f"ILSVRC2012_val_{i:08d}" for i in range(1, N_FAKE + 1)]
    # the devkit maps its own (permuted) class ids through meta.mat, torchvision's layout by folder: same labels
    assert dev.labels == tv.labels and len(set(dev.labels.values())) == 4
    categories = torchvision_categories()
    assert dev.wnids == tv.wnids == tuple(sorted(fake_wnids()))
    assert [syn[0] for syn in dev.names] == categories == [syn[0] for syn in tv.names]
    for image_id, label in tv.labels.items():  # the folder an image sits in is its class
        assert tv.images[image_id].parent.name == tv.wnids[label]


def test_boxes_are_read_with_the_voc_parser_as_half_open_pixels(trees):
    val = read_imagenet_val(trees["devkit"], need_boxes=True)
    touching = 0
    for image_id, label in val.labels.items():
        width, height, by_class = image_boxes(val, image_id)
        root = ET.parse(val.bbox_dir / f"{image_id}.xml").getroot()
        assert (width, height) == (int(root.find("size/width").text), int(root.find("size/height").text))
        naive = []
        for obj in root.findall("object"):
            assert obj.find("name").text == val.wnids[label]
            x0, y0, x1, y1 = (int(obj.find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax"))
            touching += x0 == 0
            naive.append((max(x0 - 1, 0), max(y0 - 1, 0), x1, y1))  # 1-based inclusive -> 0-based half-open
        assert by_class == {label: naive}
        with Image.open(val.images[image_id]) as im:
            assert im.size == (width, height)
    assert touching >= 1  # the fake holds a box written with xmin 0, as some of ImageNet's are


# ---- selection -------------------------------------------------------------------------------------------------

def test_single_box_filter_equals_a_naive_loop(trees):
    val = read_imagenet_val(trees["torchvision"], need_boxes=True)
    kept = candidate_ids(val, "single_box_max_area", 0.5)
    naive = []
    for image_id in sorted(val.images):
        root = ET.parse(val.bbox_dir / f"{image_id}.xml").getroot()
        w, h = int(root.find("size/width").text), int(root.find("size/height").text)
        objs = [o for o in root.findall("object") if o.find("name").text == val.wnids[val.labels[image_id]]]
        if len(objs) == 1:
            x0, y0, x1, y1 = (int(objs[0].find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax"))
            if (x1 - max(x0, 1) + 1) * (y1 - max(y0, 1) + 1) <= 0.5 * w * h:
                naive.append(image_id)
    assert sorted(kept) == naive and 0 < len(naive) < N_FAKE  # the filter keeps some and drops some
    assert sorted(candidate_ids(val, "single_box_max_area", 1.0)) != naive  # the area bound matters


def test_seeded_draw_is_stable_and_a_larger_n_only_adds(trees):
    val = read_imagenet_val(trees["devkit"])
    ids = candidate_ids(val, None, 0.5)
    five = draw(ids, 5, how="seeded", seed=7)
    assert five == draw(list(reversed(ids)), 5, how="seeded", seed=7)  # depends on the set, not its order
    assert draw(ids, 9, how="seeded", seed=7)[:5] == five
    assert draw(ids, 5, how="seeded", seed=8) != five
    assert sorted(draw(ids, "all", how="seeded", seed=7)) == sorted(ids)


def test_numpy_legacy_draw_is_the_sequels_script_on_torchvisions_dataset(trees):
    from torchvision.datasets import ImageFolder

    val = read_imagenet_val(trees["torchvision"])
    folder = ImageFolder(str(trees["torchvision"] / "val"))  # torchvision's ImageNet('val') is this ImageFolder
    state = np.random.get_state()
    np.random.seed(123)
    expected = [Path(folder.samples[i][0]).stem for i in np.random.choice(len(folder), 10, replace=False)]
    np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    assert draw(candidate_ids(val, None, 0.5), 10, how="numpy_legacy", seed=123) == expected
    assert (np.random.get_state()[1] == before).all()  # the global generator is left as it was


def test_splits_are_disjoint_and_the_test_split_is_the_draw(trees):
    val = read_imagenet_val(trees["devkit"])
    test, train, valid = (split_ids(val, s, SETTINGS) for s in ("test", "train", "val"))
    assert sorted(test) == sorted(draw(candidate_ids(val, None, 0.5), 6, how="seeded", seed=0))
    assert len(train) == len(valid) == 2 and not (set(test) & set(train) or set(test) & set(valid) or set(train) & set(valid))
    with pytest.raises(LayersweepError, match="only 30 pass the selection") as err:
        split_ids(val, "test", dict(SETTINGS, n_images=31))
    assert one_sentence(str(err.value))


# ---- transform -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(60, 40), (40, 61), (48, 48)])
def test_image_transform_is_torchvisions(size):
    from torchvision import transforms

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    squash = transforms.Resize((32, 32), interpolation=transforms.InterpolationMode.BILINEAR)
    assert np.array_equal(transform_image(image, 32, "resize"), np.asarray(squash(image)))
    crop = transforms.Compose([transforms.Resize(round(32 * 256 / 224)), transforms.CenterCrop(32)])
    assert np.array_equal(transform_image(image, 32, "resize_center_crop"), np.asarray(crop(image)))


@pytest.mark.parametrize("resize", ["resize", "resize_center_crop"])
def test_boxes_follow_the_transform_like_a_mask_does(resize):
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    width, height, size = 120, 80, 56
    boxes = [(10, 5, 50, 40), (0, 0, 12, 80), (90, 30, 120, 75)]
    if resize == "resize":
        t = transforms.Resize((size, size), interpolation=InterpolationMode.NEAREST)
    else:
        t = transforms.Compose([transforms.Resize(round(size * 256 / 224), interpolation=InterpolationMode.NEAREST),
                                transforms.CenterCrop(size)])
    got = transform_boxes(boxes, width, height, size, resize)
    masks = []
    for x0, y0, x1, y1 in boxes:
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y1, x0:x1] = 255
        m = np.asarray(t(Image.fromarray(mask))) > 0
        if m.any():
            masks.append(m)
    assert len(got) == len(masks)  # a box the crop leaves out is dropped (the first one, at the left edge)
    for box, m in zip(got, masks):
        rows, cols = np.nonzero(m)
        # the nearest-neighbour mask covers the pixels whose centres the box holds, to a pixel
        assert box[0] == pytest.approx(cols.min(), abs=1.0) and box[2] == pytest.approx(cols.max() + 1, abs=1.0)
        assert box[1] == pytest.approx(rows.min(), abs=1.0) and box[3] == pytest.approx(rows.max() + 1, abs=1.0)
    if resize == "resize_center_crop":
        sx, sy, left, top = transform_geometry(width, height, size, resize)
        assert (round(width * sx), round(height * sy), left) == (96, 64, 20.0)  # 256/224 * 56 = 64 on the short side


def test_split_files_hold_the_transformed_images_and_their_class_boxes(trees, tmp_path):
    crops_path, index_path = tmp_path / "test_crops.npy", tmp_path / "test.parquet"
    index = make_imagenet_split(trees["torchvision"], "test", 32, crops_path, index_path, SETTINGS)
    crops = np.load(crops_path)
    assert crops.shape == (6, 32, 32, 3) and list(index["crop_id"]) == sorted(index["crop_id"])
    val = read_imagenet_val(trees["torchvision"], need_boxes=True)
    for i, row in index.iterrows():
        with Image.open(val.images[row.crop_id]) as im:
            assert np.array_equal(crops[i], transform_image(im.convert("RGB"), 32, "resize"))
            width, height = im.size
        assert row.label == val.labels[row.crop_id] and row.class_name == val.wnids[row.label]
        assert (row.xmin, row.ymin, row.xmax, row.ymax) == (0, 0, width, height)  # the whole image is shown
        expected = transform_boxes(image_boxes(val, row.crop_id)[2][row.label], width, height, 32, "resize")
        assert np.allclose(np.asarray([list(b) for b in row.boxes]), expected, atol=1e-5)


# ---- bad input: one sentence, no partial output ----------------------------------------------------------------

def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_bad_roots_and_files_are_one_sentence_naming_key_and_files(trees, tmp_path):
    cases = []
    cases.append((None, "config key 'data.imagenet_root' is not set"))
    cases.append((tmp_path / "absent", "is not a directory; it must hold either the devkit layout"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "which holds neither layout"))
    no_truth = _copy(trees["devkit"], tmp_path / "no-truth")
    (no_truth / GROUND_TRUTH).unlink()
    cases.append((no_truth, "lacks ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"))
    no_image = _copy(trees["devkit"], tmp_path / "no-image")
    next((no_image / "ILSVRC2012_img_val").iterdir()).unlink()
    cases.append((no_image, r"does not exist \(1 of 30 are missing\)"))
    for root, pattern in cases:
        with pytest.raises(LayersweepError, match=pattern) as err:
            read_imagenet_val(root)
        assert one_sentence(str(err.value)), str(err.value)
    no_boxes = _copy(trees["torchvision"], tmp_path / "no-boxes")
    shutil.rmtree(no_boxes / BBOX_DIR)
    read_imagenet_val(no_boxes)  # boxes are needed only by the pointing game and the box filter
    with pytest.raises(LayersweepError, match="lacks ILSVRC2012_bbox_val_v3/") as err:
        read_imagenet_val(no_boxes, need_boxes=True)
    assert one_sentence(str(err.value))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(LayersweepError):
        make_imagenet_split(no_boxes, "test", 32, out / "c.npy", out / "i.parquet", SETTINGS)
    assert not any(out.iterdir())  # nothing half-written


def test_a_class_index_in_another_order_is_one_sentence(trees, tmp_path):
    shifted = _copy(trees["torchvision"], tmp_path / "shifted")
    wnid_to_classes, val_wnids = torch.load(shifted / META_BIN, weights_only=True)
    wnids = sorted(wnid_to_classes)
    names = [wnid_to_classes[w] for w in wnids]
    torch.save(({w: names[(i + 1) % len(wnids)] for i, w in enumerate(wnids)}, val_wnids), shifted / META_BIN)
    with pytest.raises(LayersweepError, match="does not match torchvision's class order: class 0 is") as err:
        read_imagenet_val(shifted)
    assert one_sentence(str(err.value))
    short = _copy(trees["torchvision"], tmp_path / "short")
    torch.save(({w: wnid_to_classes[w] for w in wnids[:999]}, val_wnids), short / META_BIN)
    with pytest.raises(LayersweepError, match="holds 999 classes, not 1000") as err:
        read_imagenet_val(short)
    assert one_sentence(str(err.value))


def test_data_source_and_model_must_fit():
    check_data_model({"source": "imagenet", "samples": "images"}, {"source": "torchvision_imagenet"})
    check_data_model({"source": "voc", "target": "top1"}, {"source": "torchvision_imagenet"})
    for data, model, pattern in (
            ({"source": "imagenet", "samples": "images"}, {"source": "torchvision"}, "set model.source to torchvision_imagenet"),
            ({"source": "imagenet", "samples": "crops"}, {"source": "torchvision_imagenet"}, "set 'data.samples: images'"),
            ({"source": "voc", "target": "label"}, {"source": "torchvision_imagenet"}, "set 'data.target: top1'")):
        with pytest.raises(LayersweepError, match=pattern) as err:
            check_data_model(data, model)
        assert one_sentence(str(err.value))


def test_torchvision_imagenet_keeps_its_1000_class_classifier_and_has_no_head_stage():
    from layersweep.model import build_model, needs_head_training
    from layersweep.preprocess import TORCHVISION, preprocessing_for

    model = build_model("random", arch="vgg11", source="torchvision_imagenet", seed=0)
    assert model.classifier[-1].out_features == 1000 and not model.training
    assert not needs_head_training("torchvision_imagenet") and needs_head_training("torchvision")
    assert preprocessing_for("torchvision_imagenet") is TORCHVISION
    head = build_model("random", arch="vgg11", source="torchvision", seed=0)  # the VOC model: a new 20-class head
    assert head.classifier[-1].out_features == 20
    # same seed, same backbone: the ImageNet source only keeps the classifier it was built with
    assert torch.equal(model.features[0].weight, head.features[0].weight)
