"""data.target top1: the model's prediction on the unperturbed sample, stored once in a copy of the test index
(layersweep.targets), and the pointing game's handling of a predicted class without a box."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layersweep.data import EVAL_CANDIDATE, eval_order, sample_boxes, write_split
from layersweep.errors import LayersweepError
from layersweep.metrics.summary import summarize
from layersweep.preprocess import to_model_input
from layersweep.targets import candidates, make_top1_index, predict_top1
from test_metrics_paper import KW_SHARD, naive_pointing_game, shard_arrays, tiny_model, upsampled01

S = 12


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def colour_model(seed=0):
    """20 logits linear in the mean colour: solid-colour images get different predictions."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 20))
    with torch.no_grad():
        model[2].weight.normal_(0, 3.0)
    return model.eval()


def solid(rng, n):
    return np.repeat(np.repeat(rng.integers(0, 256, size=(n, 1, 1, 3), dtype=np.uint8), S, 1), S, 2)


def image_mode_split(tmp_path, model):
    """A VOC-like image-mode test split: 6 images, 1-3 classes each (one row per (image, class)), the rows of one
    image sharing its pixels, each row's boxes those of its class; even images hold the class the model predicts."""
    rng = np.random.default_rng(4)
    rows, crops = [], []
    for i, pixels in enumerate(solid(rng, 6)):
        classes = set(int(c) for c in rng.choice(20, size=1 + i % 3, replace=False))
        if i % 2 == 0:
            classes.add(int(predict_top1(model, pixels[None])[0]))
        for c in sorted(classes):
            box = [[float(c % 5), 1.0, float(c % 5 + 4), 9.0]]
            rows.append((f"{i:06d}_c{c:02d}", f"{i:06d}", -1, "x", int(c), 0, 0, S, S, False, "test", box))
            crops.append(pixels)
    index = pd.DataFrame(rows, columns=["crop_id", "image_id", "object_index", "class_name", "label", "xmin", "ymin",
                                        "xmax", "ymax", "truncated", "split", "boxes"])
    write_split(np.stack(crops), index, tmp_path / "test_crops.npy", tmp_path / "test.parquet")
    return np.stack(crops), index


def test_predict_top1_is_the_argmax_of_a_plain_forward():
    crops = np.concatenate([solid(np.random.default_rng(0), 6),
                            np.random.default_rng(1).integers(0, 256, size=(1, S, S, 3), dtype=np.uint8)])
    model = colour_model(2)
    with torch.no_grad():
        expected = [int(model(to_model_input(crops[i:i + 1])).argmax()) for i in range(7)]
    assert predict_top1(model, crops, batch_size=3).tolist() == expected
    assert len(set(expected)) > 1  # not a constant prediction


def test_top1_index_explains_each_image_once_with_its_prediction_and_its_boxes(tmp_path):
    model = colour_model(3)
    crops, index = image_mode_split(tmp_path, model)
    out = make_top1_index(model, tmp_path / "test_crops.npy", tmp_path / "test.parquet", tmp_path / "top1.parquet",
                          samples="images", n_images=5, seed=0, batch_size=2)
    stored = pd.read_parquet(tmp_path / "top1.parquet")
    assert list(stored["label"]) == list(out["label"]) and list(stored["top1"]) == list(out["top1"])
    # the boxes survive the parquet round trip, empty lists included, as the pointing game reads them
    assert [len(b) for b in sample_boxes(stored)] == [len(b) for b in out["boxes"]]
    # rows and pixels stay as they are (the crops file is shared); one candidate row per image, its first
    assert list(out["crop_id"]) == list(index["crop_id"]) and (out["true_label"] == index["label"]).all()
    firsts = index.groupby("image_id")["crop_id"].min()
    assert set(out.loc[out[EVAL_CANDIDATE], "crop_id"]) == set(firsts)
    evaluated = eval_order(out, 0)[:5]
    assert len({cid[:6] for cid in evaluated}) == 5  # five distinct images
    with_box = 0
    with torch.no_grad():
        for cid in out["crop_id"]:
            row = out.set_index("crop_id").loc[cid]
            if cid not in evaluated:
                assert row.top1 == -1 and row.label == row.true_label
                continue
            pred = int(model(to_model_input(crops[list(index["crop_id"]).index(cid)][None])).argmax())
            assert row.top1 == row.label == pred
            own = index[(index.image_id == row.image_id) & (index.label == pred)]
            boxes = [list(b) for b in row.boxes]
            assert boxes == ([list(b) for b in own.iloc[0].boxes] if len(own) else [])
            with_box += len(own) > 0
    assert 0 < with_box < 5  # predictions with a box of their class, and without
    with pytest.raises(LayersweepError, match="asks for 7 evaluation samples but the test split has only 6 images"):
        make_top1_index(model, tmp_path / "test_crops.npy", tmp_path / "test.parquet", tmp_path / "x.parquet",
                        samples="images", n_images=7, seed=0)
    assert not (tmp_path / "x.parquet").exists()


def test_crop_mode_keeps_every_row_a_candidate():
    index = pd.DataFrame({"crop_id": ["a_00", "a_01", "b_00"], "image_id": ["a", "a", "b"]})
    assert candidates(index, "crops").all()
    assert candidates(index, "images").tolist() == [True, False, True]
    # without the column, the evaluation order is today's
    assert eval_order(index, 3) == eval_order(index.assign(**{EVAL_CANDIDATE: True}), 3)


def test_pointing_game_leaves_out_a_target_without_a_box_and_the_summary_counts_it():
    from layersweep.metrics.metric_shard import score_metric_shard

    arrays, crops = shard_arrays()
    boxes = [np.array([[1.5, 0.5, 9.0, 7.25]]), np.zeros((0, 4)), np.array([[10.4, 2.6, 13.9, 11.5]])]
    df = score_metric_shard("pointing_game", tiny_model(), crops, arrays, boxes=boxes, **KW_SHARD)
    gone = df["crop_id"] == arrays["crop_id"][1]
    assert df.loc[gone, ["pointing_game", "pointing_chance"]].isna().all(axis=None)
    for row in df[~df.constant & ~gone].itertuples():  # the others as a naive loop has them
        i = list(arrays["crop_id"]).index(row.crop_id)
        share, chance = naive_pointing_game(upsampled01(arrays[f"map_{row.layer}"][i].astype(np.float64)), boxes[i])
        assert row.pointing_game == pytest.approx(share, abs=1e-4) and row.pointing_chance == pytest.approx(chance)
    summary = summarize(df, n_boot=50, metrics=["pointing_game", "pointing_chance"]).set_index(["layer", "metric"])
    # layer 2: three maps, one without a box; layer 6: crop 1's map is constant (counted there, not as no value)
    assert summary.loc[(2, "pointing_game"), ["n", "n_no_value", "n_constant"]].tolist() == [2, 1, 0]
    assert summary.loc[(6, "pointing_game"), ["n", "n_no_value", "n_constant"]].tolist() == [2, 0, 1]
    with pytest.raises(LayersweepError, match="has no box of its class"):  # the plain masks still refuse it
        from layersweep.metrics.pointing_game import box_masks
        box_masks(boxes, (S, S), sample_ids=list(arrays["crop_id"]))
