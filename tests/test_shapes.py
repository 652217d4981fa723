"""The ground-truth shapes dataset (layersweep/shapes.py): determinism per (split, index), masks equal to the
drawn shape, no label leak through colour, held-out scenes, and bad config values in one sentence."""
import numpy as np
import pandas as pd
import pytest

from layersweep.errors import LayersweepError
from layersweep.shapes import (CLASSES, ShapesSpec, build_shapes_split, destroyed_backgrounds, draw_properties,
                               draw_shape, make_sample, make_shapes_splits, masks_by_id, perlin_noise, read_masks,
                               scene_pools, spec_from_config)

SMALL = ShapesSpec(image_size=48, n={"train": 40, "val": 8, "test": 24}, scenes={"train": 3, "val": 1, "test": 2},
                   thresholds=(0.3, 0.6))


@pytest.fixture(scope="module")
def backgrounds():
    pools = scene_pools(SMALL)
    return {s: destroyed_backgrounds(SMALL, pools[s], s) for s in ("train", "val", "test")}


def test_sample_depends_only_on_split_and_index(backgrounds):
    bigger = ShapesSpec(**{**SMALL.__dict__, "n": {"train": 80, "val": 8, "test": 50}})
    a_img, a_mask, a_idx = build_shapes_split(SMALL, "test", backgrounds["test"])
    b_img, b_mask, b_idx = build_shapes_split(bigger, "test", destroyed_backgrounds(bigger, scene_pools(bigger)["test"], "test"))
    n = len(a_img)
    assert np.array_equal(a_img, b_img[:n]) and np.array_equal(a_mask, b_mask[:n])
    pd.testing.assert_frame_equal(a_idx, b_idx.iloc[:n].reset_index(drop=True))
    # another split or seed gives other samples
    c_img, _, _ = build_shapes_split(SMALL, "val", backgrounds["val"])
    assert not np.array_equal(a_img[:8], c_img)
    other = ShapesSpec(**{**SMALL.__dict__, "seed": 1})
    assert draw_properties(other, "test", 0) != draw_properties(SMALL, "test", 0)


def test_mask_is_exactly_the_drawn_shape(backgrounds):
    for i in range(SMALL.n["test"]):
        image, mask, shape, scene, t = make_sample(SMALL, "test", i, backgrounds["test"])
        # the shape drawn on two different flat canvases changes exactly the mask's pixels
        for fill in (0, 255):
            canvas = np.full((48, 48, 3), fill, np.uint8)
            colour = (255 - fill,) * 3
            changed = (draw_shape(canvas, shape, colour=colour) != fill).any(axis=2)
            assert np.array_equal(changed, mask.astype(bool)), (i, CLASSES[shape.label])
        # and the image holds the shape's colour on every mask pixel
        assert (image[mask.astype(bool)] == np.array(shape.colour, np.uint8)).all()
        assert mask.any()


def test_outlines_leave_the_interior_out():
    spec = ShapesSpec(image_size=128, size_ranges=((80, 100),))
    found = set()
    for i in range(60):
        shape = draw_properties(spec, "train", i)
        filled = CLASSES[shape.label].removesuffix("_outline")
        if CLASSES[shape.label].endswith("_outline"):
            ring = draw_shape(np.zeros((128, 128), np.uint8), shape, colour=(1,))
            solid = draw_shape(np.zeros((128, 128), np.uint8), type(shape)(CLASSES.index(filled), shape.colour,
                                                                            shape.centre, shape.size, shape.angle,
                                                                            shape.size_range), colour=(1,))
            cx, cy = shape.centre  # OpenCV centres the stroke on the outline: the middle stays background
            assert ring[cy, cx] == 0 and solid[cy, cx] == 1
            found.add(filled)
    assert found == {"circle", "square", "triangle"}


def test_no_label_leak_through_colour():
    """Colour has its own stream: a classifier on the colour alone (and its low bits, the paper's leak) is at
    chance on held-out samples, while the same classifier finds a leak planted as the paper's code has it."""
    from sklearn.ensemble import RandomForestClassifier

    spec = ShapesSpec(image_size=64)

    def table(split, n):
        rows = [draw_properties(spec, split, i) for i in range(n)]
        colours = np.array([r.colour for r in rows])
        X = np.concatenate([colours, colours % 8], axis=1)
        return X, np.array([r.label for r in rows])

    X_train, y_train = table("train", 3000)
    X_test, y_test = table("test", 1200)
    clf = RandomForestClassifier(n_estimators=100, random_state=0).fit(X_train, y_train)
    acc = (clf.predict(X_test) == y_test).mean()
    # chance 1/6; 4 standard errors above it
    assert acc < 1 / 6 + 4 * np.sqrt(1 / 6 * 5 / 6 / len(y_test)), acc
    assert (X_test[:, 3] == y_test).mean() < 0.25  # the red value's low bits do not equal the label
    leaky = X_train.copy()
    leaky[:, 3] = y_train  # the paper's coupling: red's low bits = the label
    leaky_test = X_test.copy()
    leaky_test[:, 3] = y_test
    assert (RandomForestClassifier(n_estimators=20, random_state=0).fit(leaky, y_train).predict(leaky_test)
            == y_test).mean() > 0.9


def test_scenes_are_held_out_between_splits():
    pools = scene_pools(SMALL)
    flat = {s: [p.tobytes() for p in pools[s]] for s in pools}
    assert not set(flat["train"]) & set(flat["test"]) and not set(flat["train"]) & set(flat["val"])
    assert len(set(flat["test"])) == 2


def test_perlin_noise_is_smooth_and_seeded():
    a = perlin_noise(64, 8, np.random.default_rng(0))
    b = perlin_noise(64, 8, np.random.default_rng(0))
    assert np.array_equal(a, b) and a.std() > 0.05
    assert np.abs(np.diff(a, axis=1)).max() < 0.3  # neighbours close: 8 px per period


def test_written_splits_and_masks(tmp_path, backgrounds):
    out = {s: (tmp_path / f"{s}_crops.npy", tmp_path / f"{s}.parquet", tmp_path / f"{s}_masks.npy")
           for s in ("test",)}
    make_shapes_splits(SMALL, out, progress=False)
    from layersweep.data import read_split

    crops, index = read_split(out["test"][0], out["test"][1])
    masks = read_masks(out["test"][2], len(index))
    assert crops.shape == (24, 48, 48, 3) and masks.shape == (24, 48, 48)
    assert set(index["label"]) <= set(range(6)) and (index["class_name"] == [CLASSES[i] for i in index["label"]]).all()
    ids = list(index["crop_id"][[5, 2]])
    assert np.array_equal(masks_by_id(out["test"][2], out["test"][1], ids), masks[[5, 2]])
    with pytest.raises(LayersweepError, match="not in"):
        masks_by_id(out["test"][2], out["test"][1], ["nope"])


@pytest.mark.parametrize("data, key", [
    ({"shapes": {"n_test": 0}}, "data.shapes.n_test"),
    ({"shapes": {"background": "books"}}, "data.shapes.background"),
    ({"shapes": {"thresholds": [1.5]}}, "data.shapes.thresholds"),
    ({"shapes": {"size_ranges": [[30, 20]]}}, "data.shapes.size_ranges"),
    ({"shapes": {"colour": 1}}, "data.shapes.colour"),
])
def test_bad_config_is_one_sentence(data, key):
    with pytest.raises(LayersweepError, match=key.replace(".", r"\.")):
        spec_from_config({"crop_size": 64, **data})


def test_voc_background_without_photos_is_one_sentence(tmp_path):
    from layersweep.shapes import background_source

    spec = spec_from_config({"crop_size": 64, "voc_root": str(tmp_path), "shapes": {"background": "voc"}})
    with pytest.raises(LayersweepError, match="data.shapes.background"):
        background_source(spec)
    assert background_source(spec_from_config({"crop_size": 64, "voc_root": str(tmp_path)})) == "procedural"
