"""score_shard / score_rescaled_shard on tiny npz shards written here in the attribution layout."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from layersweep.errors import LayersweepError
from layersweep.metrics import score_rescaled_shard, score_shard
from layersweep.preprocess import to_model_input, to_pixels, normalize

SIZE = 16
N = 3
LAYERS = [0, 3, 5]
KW = dict(curve_points=6, blur_kernel=5, blur_sigma=2.0, batch_size=7, constant_eps=1e-6, device="cpu",
          progress=False)


def tiny_model():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 20),
    )
    with torch.no_grad():
        m[-1].weight.mul_(8.0)
    return m.eval()


def make_crops(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(N, SIZE, SIZE, 3), dtype=np.uint8)


def write_shard(path, *, drop=None, method="gradcampp"):
    rng = np.random.default_rng(1)
    arrays = {
        "method": np.array(method),
        "crop_id": np.array(["a", "b", "c"]),
        "target": np.array([2, 7, 19], dtype=np.int64),
        "logit": rng.normal(size=N).astype(np.float32),
        "prob": np.full(N, np.nan, dtype=np.float32),  # NaN: the consistency warning stays quiet
        "layers": np.array(LAYERS, dtype=np.int64),
        "map_0": rng.normal(size=(N, 16, 16)).astype(np.float32),
        "map_3": rng.normal(size=(N, 8, 8)).astype(np.float16),
        "map_5": rng.normal(size=(N, 4, 4)).astype(np.float32),
    }
    arrays["map_5"][1] = 0.25  # a constant map
    if drop:
        del arrays[drop]
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path, arrays


def bilinear_naive(m, H, W):
    h, w = m.shape
    ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    rows = np.stack([np.interp(xs, np.arange(w), m[i]) for i in range(h)])
    return np.stack([np.interp(ys, np.arange(h), rows[:, j]) for j in range(W)], axis=1)


def norm01(m):
    up = bilinear_naive(np.asarray(m, dtype=np.float64), SIZE, SIZE)
    return torch.tensor((up - up.min()) / (up.max() - up.min()), dtype=torch.float32)


def prob(model, img, c):
    with torch.no_grad():
        return float(torch.softmax(model(img[None]), 1)[0, c])


def test_score_shard_rows_and_values(tmp_path):
    path, arrays = write_shard(tmp_path / "shard-0.npz")
    model, crops = tiny_model(), make_crops()
    df = score_shard(model, crops, path, mask_space="normalized", **KW)
    assert list(df.columns) == ["crop_id", "method", "layer", "target", "score", "explanation_score", "ad", "ic",
                                "deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve", "constant"]
    assert len(df) == N * len(LAYERS)
    assert set(zip(df.crop_id, df.layer)) == {(c, l) for c in "abc" for l in LAYERS}
    # the constant map: flagged, NaN metrics, no crash; the others are finite
    const = df[df.constant]
    assert list(zip(const.crop_id, const.layer)) == [("b", 5)]
    assert const[["explanation_score", "ad", "ic", "deletion_auc", "insertion_auc"]].isna().all(axis=None)
    rest = df[~df.constant]
    assert np.isfinite(rest[["explanation_score", "ad", "ic", "deletion_auc", "insertion_auc"]]).all(axis=None)

    x = to_model_input(crops)
    k = np.linspace(0, 1, KW["curve_points"])
    for _, row in rest.iterrows():
        i = "abc".index(row.crop_id)
        c = int(arrays["target"][i])
        Y = prob(model, x[i], c)
        S = norm01(arrays[f"map_{row.layer}"][i].astype(np.float32))
        O = prob(model, S[None] * x[i], c)
        assert row.score == pytest.approx(Y, abs=1e-6)
        assert row.explanation_score == pytest.approx(O, abs=1e-5)
        assert row.ad == pytest.approx(max(0.0, Y - O) / Y * 100, abs=1e-3)
        assert row.ic == (100.0 if row.explanation_score > row.score else 0.0)
        # curve ends are the shared crop scores; AUC is the trapezoid of the stored curve
        assert row.deletion_curve[0] == pytest.approx(Y, abs=1e-6)
        assert row.insertion_curve[-1] == pytest.approx(Y, abs=1e-6)
        assert row.deletion_curve[-1] == pytest.approx(prob(model, torch.zeros_like(x[i]), c), abs=1e-6)
        assert row.deletion_auc == pytest.approx(np.trapezoid(row.deletion_curve, k), abs=1e-9)
        assert row.insertion_auc == pytest.approx(np.trapezoid(row.insertion_curve, k), abs=1e-9)
        # one interior deletion point by hand: the top round(k * H * W) pixels set to 0
        order = np.argsort(-S.numpy().ravel(), kind="stable")
        n = int(np.floor(k[2] * SIZE * SIZE + 0.5))
        img = x[i].clone().reshape(3, -1)
        img[:, torch.as_tensor(order[:n])] = 0
        assert row.deletion_curve[2] == pytest.approx(prob(model, img.reshape(3, SIZE, SIZE), c), abs=1e-5)

    # parquet round trip keeps the curves as lists
    df.to_parquet(tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert list(back.deletion_curve.iloc[0]) == pytest.approx(df.deletion_curve.iloc[0])


def test_crops_matched_by_id_and_pixel_mask_space(tmp_path):
    path, arrays = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    aligned = score_shard(model, crops, dict(np.load(path)), mask_space="pixel", **KW)
    # a larger crop store in another order, with ids
    extra = np.random.default_rng(7).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    store = np.concatenate([extra[:1], crops[2:], crops[:1], extra[1:], crops[1:2]])
    ids = ["z", "c", "a", "y", "b"]
    by_id = score_shard(model, store, path, crop_ids=ids, mask_space="pixel", **KW)
    cols = ["score", "explanation_score", "ad", "deletion_auc", "insertion_auc"]
    np.testing.assert_allclose(by_id[cols].to_numpy(float), aligned[cols].to_numpy(float), atol=1e-6)
    # mask_space pixel: e = normalize(S * pixels)
    row = aligned[(aligned.crop_id == "a") & (aligned.layer == 3)].iloc[0]
    S = norm01(arrays["map_3"][0].astype(np.float32))
    e = normalize(S[None, None] * to_pixels(crops[:1]))[0]
    assert row.explanation_score == pytest.approx(prob(model, e, 2), abs=1e-5)


def test_score_rescaled_shard(tmp_path):
    path, arrays = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    df = score_rescaled_shard(model, crops, path, r=0.3, rtol=1e-4, mask_space="normalized", batch_size=4,
                              constant_eps=1e-6, device="cpu", progress=False)
    assert list(df.columns) == ["crop_id", "method", "layer", "target", "r", "score", "explanation_score", "ad",
                                "ic", "exponent", "clamped", "constant"]
    assert (df.r == 0.3).all() and len(df) == N * len(LAYERS)
    c = df[df.constant].iloc[0]
    assert (c.crop_id, c.layer) == ("b", 5) and np.isnan(c.exponent) and np.isnan(c.ad) and not c.clamped
    x = to_model_input(crops)
    for _, row in df[~df.constant].iterrows():
        i = "abc".index(row.crop_id)
        S = norm01(arrays[f"map_{row.layer}"][i].astype(np.float32))
        Sp = S.double() ** row.exponent
        if not row.clamped:
            assert float(Sp.sum()) == pytest.approx(0.3 * SIZE * SIZE, rel=2e-4)
        O = prob(model, Sp.float()[None] * x[i], int(row.target))
        assert row.explanation_score == pytest.approx(O, abs=1e-5)
        assert row.ad == pytest.approx(max(0.0, row.score - O) / row.score * 100, abs=1e-3)


def test_bad_input_is_one_sentence(tmp_path):
    model, crops = tiny_model(), make_crops()
    path, _ = write_shard(tmp_path / "s.npz", drop="map_3")
    with pytest.raises(LayersweepError, match="map_3"):
        score_shard(model, crops, path, **KW)
    path, _ = write_shard(tmp_path / "t.npz", drop="target")
    with pytest.raises(LayersweepError, match="'target'"):
        score_shard(model, crops, path, **KW)
    path, _ = write_shard(tmp_path / "u.npz")
    with pytest.raises(LayersweepError, match="mask_space"):
        score_shard(model, crops, path, mask_space="rgb", **KW)
    with pytest.raises(LayersweepError, match="'c'"):
        score_shard(model, crops[:2], path, crop_ids=["a", "b"], **KW)
    with pytest.raises(LayersweepError, match="crop_ids"):
        score_shard(model, crops[:2], path, **KW)
    for r in (0.0, 1.2):
        with pytest.raises(LayersweepError, match="r ="):
            score_rescaled_shard(model, crops, path, r=r, device="cpu", progress=False)
    with pytest.raises(LayersweepError, match="missing.npz does not exist"):
        score_shard(model, crops, tmp_path / "missing.npz", **KW)


def test_one_layer_per_pass_equals_one_pass(tmp_path, monkeypatch):
    """A 64-crop shard at 224 px splits its layers into several passes (batching.PASS_BYTES); here forced to one layer
    per pass, which must give the same rows as all layers in one pass, plain and rescaled."""
    from layersweep.metrics import batching

    path, _ = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    assert len(batching.layer_groups(LAYERS, N, SIZE * SIZE)) == 1  # the default: one pass
    one = score_shard(model, crops, path, **KW)
    one_r = score_rescaled_shard(model, crops, path, r=0.3, batch_size=4, device="cpu", progress=False)
    monkeypatch.setattr(batching, "PASS_BYTES", 1)
    assert batching.layer_groups(LAYERS, N, SIZE * SIZE) == [[layer] for layer in LAYERS]
    split = score_shard(model, crops, path, **KW)
    split_r = score_rescaled_shard(model, crops, path, r=0.3, batch_size=4, device="cpu", progress=False)
    pd.testing.assert_frame_equal(split, one)
    pd.testing.assert_frame_equal(split_r, one_r)


def test_a_wrong_stored_prob_warns(tmp_path):
    """The shard's prob (written by the attribution stage) is checked against the score recomputed here."""
    path, arrays = write_shard(tmp_path / "s.npz")
    model, crops = tiny_model(), make_crops()
    x = to_model_input(crops)
    arrays["prob"] = np.array([prob(model, x[i], int(c)) for i, c in enumerate(arrays["target"])], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right probs: silent
        score_shard(model, crops, arrays, **KW)
    arrays["prob"][1] += 0.05
    with pytest.warns(UserWarning, match="crop 'b'.*differs from the shard's prob"):
        score_shard(model, crops, arrays, **KW)
    with pytest.warns(UserWarning, match="crop 'b'"):
        score_rescaled_shard(model, crops, arrays, r=0.3, device="cpu", progress=False)


def test_a_layer_whose_maps_are_all_constant_is_flagged_not_a_crash(tmp_path, monkeypatch):
    """Every map of a layer constant (FullGrad at a dead layer did this in the demo): with one layer per pass
    that pass has no map to score; its rows are flagged and NaN, the other layers' rows are the usual ones."""
    from layersweep.metrics import batching

    path, arrays = write_shard(tmp_path / "s.npz")
    arrays["map_3"][:] = 0.0
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    model, crops = tiny_model(), make_crops()
    one = score_shard(model, crops, path, **KW)
    one_r = score_rescaled_shard(model, crops, path, r=0.3, batch_size=4, device="cpu", progress=False)
    monkeypatch.setattr(batching, "PASS_BYTES", 1)  # one layer per pass: layer 3's pass is all constant
    split = score_shard(model, crops, path, **KW)
    split_r = score_rescaled_shard(model, crops, path, r=0.3, batch_size=4, device="cpu", progress=False)
    for df in (split, split_r):
        dead = df[df.layer == 3]
        assert dead.constant.all() and dead[["explanation_score", "ad", "ic"]].isna().all(axis=None)
        assert set(df[df.constant].layer) == {3, 5}  # and crop b's constant map at layer 5
    assert split[split.layer == 3][["deletion_auc", "insertion_auc"]].isna().all(axis=None)
    pd.testing.assert_frame_equal(split, one)
    pd.testing.assert_frame_equal(split_r, one_r)
