"""The seed papers' metrics on tensors: Average Drop in Deletion, the energy-based pointing game and the
zero-start insertion (LIFT-CAM), against naive loops (one image at a time) and closed forms."""
import numpy as np
import pytest
import torch
from torch import nn

from layersweep.errors import LayersweepError
from layersweep.metrics import crop_scores, deletion_insertion, score_shard
from layersweep.metrics.add import average_drop_in_deletion_terms, deletion_image_scores
from layersweep.metrics.pointing_game import box_masks, energy_pointing_game
from layersweep.preprocess import TORCHRAY_VOC, IMAGENET_MEAN, IMAGENET_STD, to_model_input

H, W = 12, 14  # non-square


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_model(seed=0):
    """VGG-shaped, 20 logits, random non-zero biases everywhere."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 20),
    )
    with torch.no_grad():
        for mod in m:
            if hasattr(mod, "bias"):
                mod.bias.normal_(0, 0.5)
        m[-1].weight.mul_(8.0)  # spread the softmax so perturbations move the scores visibly
    return m.eval()


def images(n, seed=1):
    pix = torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pix - mean) / std


def score_one(model, img, c):
    with torch.no_grad():
        return float(torch.softmax(model(img[None]), dim=1)[0, c])


# ---------------------------------------------------------------------------------------------------------
# Average Drop in Deletion
# ---------------------------------------------------------------------------------------------------------
def test_add_terms_on_hand_made_scores():
    Y = np.array([0.5, 0.2, 0.8, 0.4, 0.3, 0.0])
    D = np.array([0.25, 0.3, 0.8, 0.0, np.nan, 0.1])
    got = average_drop_in_deletion_terms(Y, D)
    # no max(0, .): a score that rises when the map is removed gives a negative term; Y == 0 gives 0
    np.testing.assert_allclose(got[[0, 1, 2, 3, 5]], [50.0, -50.0, 0.0, 100.0, 0.0])
    assert np.isnan(got[4])
    t = average_drop_in_deletion_terms(torch.tensor(Y), torch.tensor(D))
    np.testing.assert_allclose(t.numpy(), got, equal_nan=True)


@pytest.mark.parametrize("mask_space", ["normalized", "pixel"])
def test_add_equals_naive_loop(mask_space):
    model = tiny_model()
    x = images(3)
    targets = torch.tensor([4, 11, 19])
    maps = torch.rand(5, H, W, generator=torch.Generator().manual_seed(2))
    crop_index = torch.tensor([2, 0, 1, 0, 2])  # several maps per image, out of order
    Y = torch.tensor([score_one(model, x[c], int(targets[c])) for c in range(3)])
    D = deletion_image_scores(model, x, maps, targets, crop_index=crop_index, mask_space=mask_space,
                              batch_size=2)  # batches cut across images
    terms = average_drop_in_deletion_terms(Y[crop_index], D)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    for m in range(5):
        c = int(crop_index[m])
        keep = 1.0 - maps[m].double()
        if mask_space == "normalized":
            inverted = keep * x[c].double()
        else:  # the map removes pixel intensity; the model sees the result normalised again
            inverted = (keep * (x[c].double() * std + mean) - mean) / std
        d = score_one(model.double(), inverted, int(targets[c]))
        model.float()
        y = score_one(model, x[c], int(targets[c]))
        assert float(D[m]) == pytest.approx(d, abs=2e-6)
        assert float(terms[m]) == pytest.approx((y - d) / y * 100, abs=1e-3)
    assert (terms < -1).any() and (terms > 1).any()  # both signs occur: no max(0, .) crept in


def test_add_of_a_zero_map_is_zero_and_of_a_full_map_is_the_zero_image():
    """Closed forms: S = 0 removes nothing (D = Y, term 0); S = 1 removes everything (D = score of zeros)."""
    model = tiny_model(1)
    x = images(2, seed=3)
    t = torch.tensor([0, 7])
    zero, one = torch.zeros(2, H, W), torch.ones(2, H, W)
    Y = torch.tensor([score_one(model, x[i], int(t[i])) for i in range(2)])
    D0 = deletion_image_scores(model, x, zero, t)
    D1 = deletion_image_scores(model, x, one, t)
    torch.testing.assert_close(average_drop_in_deletion_terms(Y, D0), torch.zeros(2), atol=1e-4, rtol=0)
    for i in range(2):
        assert float(D1[i]) == pytest.approx(score_one(model, torch.zeros_like(x[i]), int(t[i])), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# energy-based pointing game
# ---------------------------------------------------------------------------------------------------------
def naive_pointing_game(smap, boxes):
    """Pixel by pixel: a pixel counts once if its centre lies in any half-open box."""
    Hs, Ws = smap.shape
    inside = total = 0.0
    n_in = 0
    for i in range(Hs):
        for j in range(Ws):
            v = float(smap[i, j])
            total += v
            if any(x0 <= j + 0.5 < x1 and y0 <= i + 0.5 < y1 for x0, y0, x1, y1 in boxes):
                inside += v
                n_in += 1
    return inside / total * 100, n_in / (Hs * Ws) * 100


def test_pointing_game_equals_naive_loop():
    rng = np.random.default_rng(4)
    boxes = [
        np.array([[1.3, 2.7, 9.2, 8.5], [6.0, 0.0, 14.0, 5.49]]),   # overlapping, fractional, at the border
        np.array([[0.0, 0.0, 14.0, 12.0]]),                       # the whole image
        np.array([[2.5, 3.5, 3.5, 4.5], [3.0, 3.0, 7.0, 11.0], [10.1, 1.9, 13.6, 11.2]]),
    ]
    maps = torch.tensor(rng.random((5, H, W)), dtype=torch.float32)
    crop_index = torch.tensor([0, 2, 1, 2, 0])
    got = energy_pointing_game(maps, box_masks(boxes, (H, W)), crop_index)
    for m in range(5):
        share, chance = naive_pointing_game(maps[m].numpy().astype(np.float64), boxes[int(crop_index[m])])
        assert float(got["pointing_game"][m]) == pytest.approx(share, rel=1e-9, abs=1e-9)
        assert float(got["pointing_chance"][m]) == pytest.approx(chance, abs=1e-12)
    assert float(got["pointing_game"][2]) == pytest.approx(100.0) and float(got["pointing_chance"][2]) == 100.0


def test_pointing_game_closed_forms():
    box = np.array([[3.0, 2.0, 8.0, 6.0]])  # columns 3..7, rows 2..5: 20 pixels
    inside = torch.zeros(H, W)
    inside[2:6, 3:8] = 1.0
    uniform = torch.full((H, W), 0.7)
    ramp = torch.arange(W, dtype=torch.float32).expand(H, W) / (W - 1)  # S(i, j) = j / (W - 1)
    got = energy_pointing_game(torch.stack([inside, uniform, ramp, 2 * ramp]), box_masks([box], (H, W)),
                               torch.zeros(4, dtype=torch.long))
    pg, chance = got["pointing_game"].tolist(), got["pointing_chance"].tolist()
    assert pg[0] == 100.0                                    # all the mass in the box
    assert pg[1] == pytest.approx(20 / (H * W) * 100)        # a uniform map scores the chance level
    assert chance == [pytest.approx(20 / (H * W) * 100)] * 4
    # ramp: rows 2..5 (4 of H) times columns 3..7 over every column: 4 * (3+...+7) / (H * (0+...+13))
    assert pg[2] == pytest.approx(4 * sum(range(3, 8)) / (H * sum(range(W))) * 100)
    assert pg[3] == pytest.approx(pg[2], rel=1e-12)          # a positive scale cancels
    # a map that is 1 outside the box only scores 0
    assert float(energy_pointing_game((1 - inside)[None], box_masks([box], (H, W)))["pointing_game"][0]) == 0.0


def test_pointing_game_union_counts_overlaps_once_and_pixel_centres_decide():
    # [0, 4) x [0, 4) and [2, 6) x [2, 6) overlap on 4 pixels: the union holds 16 + 16 - 4 = 28
    masks = box_masks([np.array([[0, 0, 4, 4], [2, 2, 6, 6]])], (H, W))
    assert int(masks.sum()) == 28
    got = energy_pointing_game(torch.ones(1, H, W), masks)
    assert float(got["pointing_game"][0]) == pytest.approx(28 / (H * W) * 100)
    # the same box twice is the box once
    assert int(box_masks([np.array([[1, 1, 5, 5]] * 2)], (H, W)).sum()) == 16
    # fractional edges: [2.6, 5.4) holds the centres 3.5 and 4.5 (columns 3, 4), [2.4, 5.6) also 2.5 and 5.5
    narrow = box_masks([np.array([[2.6, 0.0, 5.4, H]])], (H, W))[0]
    wide = box_masks([np.array([[2.4, 0.0, 5.6, H]])], (H, W))[0]
    assert narrow.any(dim=0).nonzero()[:, 0].tolist() == [3, 4]
    assert wide.any(dim=0).nonzero()[:, 0].tolist() == [2, 3, 4, 5]
    column = torch.zeros(2, H, W)
    column[0, :, 5] = 1.0  # all the mass on column 5: outside the narrow box
    column[1, :, 3] = 1.0  # on column 3: inside
    assert energy_pointing_game(column, narrow[None].expand(2, H, W))["pointing_game"].tolist() == [0.0, 100.0]
    # half-open: a box ending at a pixel centre leaves that pixel out; a box thinner than a pixel may hold none
    assert int(box_masks([np.array([[0.0, 0.0, 3.5, 1.0]])], (H, W)).sum()) == 3
    assert int(box_masks([np.array([[4.6, 0.0, 5.4, 1.0]])], (H, W)).sum()) == 0


def test_pointing_game_bad_boxes_are_one_sentence():
    good = np.array([[0.0, 0.0, 4.0, 4.0]])
    cases = {
        "outside": np.array([[2.0, 1.0, 14.5, 5.0]]),   # x1 beyond the 14-pixel width
        "negative": np.array([[-0.5, 1.0, 4.0, 5.0]]),
        "empty": np.array([[3.0, 1.0, 3.0, 5.0]]),
        "nan": np.array([[np.nan, 1.0, 4.0, 5.0]]),
    }
    for bad in cases.values():
        with pytest.raises(LayersweepError, match=r"^sample 000005_c03 has the box .* outside its 14x12 input\.$"):
            box_masks([good, bad], (H, W), sample_ids=["000001_c00", "000005_c03"])
    with pytest.raises(LayersweepError, match=r"sample 000007_c01 has no box of its class"):
        box_masks([np.zeros((0, 4))], (H, W), sample_ids=["000007_c01"])
    with pytest.raises(LayersweepError, match=r"rows of \[x0, y0, x1, y1\]"):
        box_masks([np.zeros((2, 3))], (H, W))
    with pytest.raises(LayersweepError, match="do not match the maps' size"):
        energy_pointing_game(torch.rand(1, H, W), box_masks([good], (W, H)))


def test_pointing_game_on_an_image_mode_index(tmp_path):
    """The boxes as the data stage stores them (a parquet `boxes` column, read by sample_boxes)."""
    import pandas as pd

    from layersweep.data import sample_boxes

    index = pd.DataFrame({"crop_id": ["000001_c00", "000001_c07"],
                          "boxes": [[[0.0, 0.0, 7.0, 6.0]], [[1.5, 1.5, 3.5, 2.5], [7.0, 6.0, 14.0, 12.0]]]})
    index.to_parquet(tmp_path / "test.parquet")
    back = pd.read_parquet(tmp_path / "test.parquet")
    masks = box_masks(sample_boxes(back), (H, W), sample_ids=back["crop_id"])
    assert masks.sum(dim=(1, 2)).tolist() == [42, 2 + 42]
    got = energy_pointing_game(torch.ones(2, H, W), masks)
    np.testing.assert_allclose(got["pointing_game"].numpy(), got["pointing_chance"].numpy())


# ---------------------------------------------------------------------------------------------------------
# insertion from a zero image
# ---------------------------------------------------------------------------------------------------------
def naive_zero_insertion(model, img, smap, c, curve_points):
    """One forward per point: the top pixels of x pasted onto the zero model input."""
    order = np.argsort(-smap.reshape(-1).numpy(), kind="stable")
    out = []
    for k in np.linspace(0, 1, curve_points):
        n = int(np.floor(k * smap.numel() + 0.5))
        idx = torch.as_tensor(order[:n])
        b = torch.zeros(3, smap.numel())
        b[:, idx] = img.reshape(3, -1)[:, idx]
        out.append(score_one(model, b.reshape(img.shape), c))
    return np.array(out)


@pytest.mark.parametrize("curve_points", [5, 41])
def test_zero_start_insertion_equals_naive_loop(curve_points):
    model = tiny_model(2)
    x = images(2, seed=5)
    targets = torch.tensor([3, 12])
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(6))
    maps[2] = torch.round(maps[2] * 3) / 3  # ties: the stable order matters
    crop_index = torch.tensor([1, 0, 1])
    res = deletion_insertion(model, x, maps, targets, crop_index=crop_index, curve_points=curve_points,
                             batch_size=7, insertion_start="zero")
    blur = deletion_insertion(model, x, maps, targets, crop_index=crop_index, curve_points=curve_points,
                              batch_size=7, blur_kernel=5, blur_sigma=2.0)
    k = np.linspace(0, 1, curve_points)
    for m in range(3):
        c = int(crop_index[m])
        want = naive_zero_insertion(model, x[c], maps[m], int(targets[c]), curve_points)
        np.testing.assert_allclose(res["insertion_curve"][m].numpy(), want, atol=1e-6)
        assert float(res["insertion_auc"][m]) == pytest.approx(np.trapezoid(want, k), abs=1e-6)
        # the start is deletion's end image; deletion itself does not depend on the start
        assert float(res["insertion_curve"][m, 0]) == float(res["deletion_curve"][m, -1])
    torch.testing.assert_close(res["deletion_curve"], blur["deletion_curve"])
    assert not torch.allclose(res["insertion_curve"][:, :2], blur["insertion_curve"][:, :2])


def test_zero_start_crop_scores_cost_one_forward_per_crop_and_bad_value():
    model = tiny_model(3)
    x = images(3, seed=7)
    t = torch.tensor([1, 2, 3])
    calls = []
    hook = model.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    base = crop_scores(model, x, t, insertion_start="zero", batch_size=64)
    hook.remove()
    assert calls == [1, 3]  # the zero image once, then the originals
    for i in range(3):
        assert float(base["blurred"][i]) == pytest.approx(score_one(model, torch.zeros_like(x[i]), int(t[i])), abs=1e-6)
        assert float(base["original"][i]) == pytest.approx(score_one(model, x[i], int(t[i])), abs=1e-6)
    assert torch.equal(base["blurred_images"], torch.zeros_like(x))
    with pytest.raises(LayersweepError, match=r"'metrics\.insertion_start' has the unknown value 'black'"):
        crop_scores(model, x, t, insertion_start="black")


def test_score_shard_zero_start_under_caffe_preprocessing(tmp_path):
    """Through the stage function, with a preprocessing whose zero input is not the zero pixel: insertion starts
    from the zero *model input* (the mean pixel), and mask_space does not change that."""
    rng = np.random.default_rng(8)
    crops = rng.integers(0, 256, size=(2, H, W, 3), dtype=np.uint8)
    shard = {"method": np.array("gradcam"), "crop_id": np.array(["a", "b"]), "target": np.array([5, 9]),
             "layers": np.array([1]), "map_1": rng.normal(size=(2, 6, 7)).astype(np.float32)}
    model = tiny_model(4)
    with torch.no_grad():
        model[0].weight.mul_(1 / 60)  # inputs on the 0-255 scale: keep the softmax away from 0 / 1
    kw = dict(curve_points=4, batch_size=5, device="cpu", progress=False, preprocessing=TORCHRAY_VOC,
              insertion_start="zero")
    df = score_shard(model, crops, shard, mask_space="pixel", **kw)
    x = to_model_input(crops, "cpu", TORCHRAY_VOC)
    for i, row in df.iterrows():
        zero = score_one(model, torch.zeros_like(x[i]), int(row.target))
        assert row.insertion_curve[0] == pytest.approx(zero, abs=1e-6)
        assert row.insertion_curve[-1] == pytest.approx(row.score, abs=1e-6)
        assert 1e-4 < zero < 1 - 1e-4 and abs(zero - row.score) > 1e-4  # the comparison can fail
    with pytest.raises(LayersweepError, match="insertion_start"):
        score_shard(model, crops, shard, **{**kw, "insertion_start": "mean"})


# ---------------------------------------------------------------------------------------------------------
# the registered metrics (metrics/add.py, metrics/pointing_game.py) through score_metric_shard
# ---------------------------------------------------------------------------------------------------------
def shard_arrays():
    rng = np.random.default_rng(9)
    arrays = {"method": np.array("gradcampp"), "crop_id": np.array(["000001_c03", "000004_c11", "000009_c19"]),
              "target": np.array([3, 11, 19]), "layers": np.array([2, 6]),
              "map_2": rng.normal(size=(3, 6, 7)).astype(np.float32),
              "map_6": rng.normal(size=(3, 3, 4)).astype(np.float16)}
    arrays["map_6"][1] = 0.5  # a constant map: NaN in every column
    crops = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    return arrays, crops


def upsampled01(m):
    """Independent bilinear (align_corners=False) upsampling to H x W, then min-max, in float64."""
    h, w = m.shape
    ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    rows = np.stack([np.interp(xs, np.arange(w), m[i]) for i in range(h)])
    up = np.stack([np.interp(ys, np.arange(h), rows[:, j]) for j in range(W)], axis=1)
    return (up - up.min()) / (up.max() - up.min())


def rescaled_naive(s, r):
    """S**p with sum r*H*W, p found by scipy's brentq on log p (independent of the project's Newton)."""
    from scipy.optimize import brentq

    a = brentq(lambda a: (s ** np.exp(a)).sum() - r * s.size, -20, 20, xtol=1e-12)
    return s ** np.exp(a)


KW_SHARD = dict(batch_size=4, device="cpu", progress=False)


@pytest.mark.parametrize("r", [None, 0.3])
def test_registered_add_equals_naive_loop(r):
    from layersweep.metrics.metric_shard import score_metric_shard

    arrays, crops = shard_arrays()
    model = tiny_model(5)
    df = score_metric_shard("add", model, crops, arrays, r=r, rtol=1e-6, mask_space="normalized", **KW_SHARD)
    x = to_model_input(crops)
    assert df["constant"].tolist() == [False] * 4 + [True] + [False]
    assert df.loc[df.constant, "add"].isna().all()
    for row in df[~df.constant].itertuples():
        i = list(arrays["crop_id"]).index(row.crop_id)
        s = upsampled01(arrays[f"map_{row.layer}"][i].astype(np.float64))
        if r is not None:
            s = rescaled_naive(s, r)
        y = score_one(model, x[i], row.target)
        d = score_one(model, torch.tensor(1 - s, dtype=torch.float32) * x[i], row.target)
        assert row.score == pytest.approx(y, abs=1e-6)
        assert row.add == pytest.approx((y - d) / y * 100, rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("r", [None, 0.3])
def test_registered_pointing_game_equals_naive_loop(r):
    from layersweep.metrics.metric_shard import score_metric_shard

    arrays, crops = shard_arrays()
    boxes = [np.array([[1.5, 0.5, 9.0, 7.25]]), np.array([[0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 14.0, 12.0]]),
             np.array([[10.4, 2.6, 13.9, 11.5]])]
    df = score_metric_shard("pointing_game", tiny_model(), crops, arrays, r=r, rtol=1e-6, boxes=boxes, **KW_SHARD)
    assert df.loc[df.constant, ["pointing_game", "pointing_chance"]].isna().all(axis=None)
    for row in df[~df.constant].itertuples():
        i = list(arrays["crop_id"]).index(row.crop_id)
        s = upsampled01(arrays[f"map_{row.layer}"][i].astype(np.float64))
        if r is not None:
            s = rescaled_naive(s, r)
        share, chance = naive_pointing_game(s, boxes[i])
        assert row.pointing_game == pytest.approx(share, abs=1e-4)
        assert row.pointing_chance == pytest.approx(chance, abs=1e-12)
    if r is not None:  # rescaling moves the share: it is a metric of the map's values, not only of its order
        plain = score_metric_shard("pointing_game", tiny_model(), crops, arrays, boxes=boxes, **KW_SHARD)
        assert (plain["pointing_game"] - df["pointing_game"]).abs().max() > 1.0


def test_registered_metrics_declare_themselves_and_refuse_crop_mode():
    from layersweep.metrics.metric_shard import score_metric_shard
    from layersweep.metrics.registry import check_compute, get_metric

    add, pg = get_metric("add"), get_metric("pointing_game")
    assert add.columns == {"add": "higher"} and add.rescaled and add.needs == ("forwards",)
    assert pg.columns == {"pointing_game": "higher", "pointing_chance": "none"} and pg.needs == ("boxes",)
    assert add.cost({}, 3)["forwards_per_map"] == 1 and pg.cost({}, 3)["forwards_per_map"] == 0
    assert check_compute(["core", "add", "pointing_game"], {}, "images") == ["core", "add", "pointing_game"]
    assert check_compute(["add"], {}, "crops") == ["core", "add"]
    with pytest.raises(LayersweepError, match=r"^metric 'pointing_game' in 'metrics.compute' needs object boxes"):
        check_compute(["add", "pointing_game"], {}, "crops")
    arrays, crops = shard_arrays()
    with pytest.raises(LayersweepError, match="needs the object boxes"):
        score_metric_shard("pointing_game", tiny_model(), crops, arrays, **KW_SHARD)
    outside = [np.array([[0.0, 0.0, 5.0, 5.0]])] * 2 + [np.array([[0.0, 0.0, 15.0, 5.0]])]
    with pytest.raises(LayersweepError, match=r"sample 000009_c19 has the box .* outside its 14x12 input"):
        score_metric_shard("pointing_game", tiny_model(), crops, arrays, boxes=outside, **KW_SHARD)
