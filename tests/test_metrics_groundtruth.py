"""Ground-truth measures (layersweep/metrics/groundtruth.py) against sklearn, literal formulas and a naive loop,
and the registry's one-sentence refusal when the data has no masks."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_metrics_shard import LAYERS, N, SIZE, make_crops, tiny_model, write_shard

from layersweep.errors import LayersweepError
from layersweep.metrics import score_metric_shard
from layersweep.metrics.batching import normalize_maps
from layersweep.metrics.groundtruth import cosine_rows, groundtruth_scores, roc_auc_rows
from layersweep.metrics.registry import check_compute

KW = dict(batch_size=7, constant_eps=1e-6, device="cpu", progress=False)


def _maps_and_masks(m=12, size=10, seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.random((m, size, size))
    maps[: m // 2] = np.round(maps[: m // 2] * 4) / 4  # many ties, as ReLU'd CAMs have
    masks = rng.random((m, size, size)) < 0.3
    return torch.from_numpy(maps), torch.from_numpy(masks)


def test_roc_auc_matches_sklearn_with_ties():
    maps, masks = _maps_and_masks()
    got = roc_auc_rows(maps, masks).numpy()
    want = [roc_auc_score(masks[i].reshape(-1).numpy(), maps[i].reshape(-1).numpy()) for i in range(len(maps))]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_roc_auc_of_an_empty_or_full_mask_is_nan():
    maps, masks = _maps_and_masks(m=2)
    masks[0] = False
    masks[1] = True
    assert np.isnan(roc_auc_rows(maps, masks).numpy()).all()


def test_cosine_and_mass_match_a_naive_loop():
    maps, masks = _maps_and_masks(seed=3)
    out = groundtruth_scores(maps.float(), masks, torch.arange(len(maps)))
    for i in range(len(maps)):
        s, mk = maps[i].numpy().astype(np.float32).astype(np.float64).ravel(), masks[i].numpy().ravel()
        num = sum(s[j] for j in range(s.size) if mk[j])
        assert out["gt_mass"][i].item() == pytest.approx(num / s.sum(), rel=1e-9)
        assert out["gt_cosine"][i].item() == pytest.approx(num / (np.sqrt((s * s).sum()) * np.sqrt(mk.sum())),
                                                           rel=1e-6)
        assert out["gt_chance"][i].item() == pytest.approx(mk.mean())
    # the mask itself is the best map: cosine 1, AUC 1, mass 1
    best = groundtruth_scores(masks.float(), masks)
    for col in ("gt_cosine", "gt_auc", "gt_mass"):
        np.testing.assert_allclose(best[col].numpy(), 1.0)
    assert torch.isnan(cosine_rows(torch.zeros(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))).all()


def test_the_stage_scores_every_map_against_its_crop_mask(tmp_path):
    path, arrays = write_shard(tmp_path / "shard.npz")
    rng = np.random.default_rng(5)
    masks = rng.random((N, SIZE, SIZE)) < 0.25
    df = score_metric_shard("groundtruth", tiny_model(), make_crops(), path, masks=masks, **KW)
    assert list(df["layer"]) == [layer for layer in LAYERS for _ in range(N)]
    for (li, layer) in enumerate(LAYERS):
        maps01, const = normalize_maps(torch.from_numpy(arrays[f"map_{layer}"].astype(np.float32)), SIZE)
        for i in range(N):
            row = df.iloc[li * N + i]
            if const[i]:
                assert np.isnan(row["gt_auc"])
                continue
            want = roc_auc_score(masks[i].ravel(), maps01[i].numpy().ravel())
            assert row["gt_auc"] == pytest.approx(want, abs=1e-12)
    rescaled = score_metric_shard("groundtruth", tiny_model(), make_crops(), path, masks=masks, r=0.3, rtol=1e-6,
                                  **KW)
    assert "gt_auc" not in rescaled.columns and rescaled["gt_cosine"].notna().any()


def test_no_masks_is_one_sentence(tmp_path):
    path, _ = write_shard(tmp_path / "shard.npz")
    with pytest.raises(LayersweepError, match="ground-truth mask"):
        score_metric_shard("groundtruth", tiny_model(), make_crops(), path, **KW)
    with pytest.raises(LayersweepError, match="data.source: shapes"):
        check_compute(["groundtruth"], {}, "crops", ["gradcampp"])
    assert check_compute(["groundtruth"], {}, "crops", ["gradcampp"], masks=True) == ["core", "groundtruth"]
