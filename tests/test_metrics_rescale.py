"""Rescaling S' = S**p to sum r*H*W: target hit, order kept, unreachable targets flagged and clamped."""
import numpy as np
import pytest
import torch

from layersweep.errors import LayersweepError
from layersweep.metrics import normalize_maps, rescale_maps
from layersweep.metrics.rescale import LOG_P_BRACKET


def smooth_maps(n, size=64, seed=0):
    """Low-resolution noise upsampled, like layer maps, values quantised to a 1/997 grid so that S**p
    cannot merge distinct values in float32 (the order check below is then exact)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, 6, 6, generator=g)
    raw[: n // 3] = torch.relu(raw[: n // 3] - 0.8)  # mostly-zero maps, like ReLU layers
    m01, const = normalize_maps(raw, size)
    assert not const.any()
    return torch.round(m01 * 997) / 997


@pytest.mark.parametrize("r", [0.05, 0.3, 0.8])
def test_rescaled_sum_hits_target_and_order_is_kept(r):
    S = smooth_maps(9)
    out, p, clamped = rescale_maps(S, r, rtol=1e-4)
    n_pix = S[0].numel()
    reachable = ((S == 1).sum((1, 2)) <= r * n_pix) & ((S > 0).sum((1, 2)) >= r * n_pix)
    assert torch.equal(clamped, ~reachable)
    assert reachable.sum() >= 6  # most maps test the root finder, not the clamp
    sums = out.double().sum((1, 2)).numpy()
    rel = np.abs(sums - r * n_pix) / (r * n_pix)
    assert (rel[reachable.numpy()] <= 1e-4).all(), rel
    # the output is S**p with the returned p (checked in float64) and p > 0
    assert (p > 0).all()
    want = S.double().numpy() ** p.numpy()[:, None, None]
    np.testing.assert_allclose(out.double().numpy(), want, rtol=1e-4, atol=1e-6)
    for i in np.flatnonzero(reachable.numpy()):  # descending stable order, as deletion/insertion rank pixels
        # (a clamped p of 2e-9 or 5e8 rounds distinct values together in float32: order not checked there)
        a = np.argsort(-S[i].numpy().ravel(), kind="stable")
        b = np.argsort(-out[i].numpy().ravel(), kind="stable")
        np.testing.assert_array_equal(a, b)


def test_unreachable_targets_are_flagged_and_clamped():
    size = 32
    n_pix = size * size
    S = smooth_maps(3, size)
    binary = torch.zeros(size, size)
    binary[:8] = 1.0           # 256 ones and 768 zeros: S**p == S for every p
    sparse = torch.zeros(size, size)
    sparse.view(-1)[:50] = torch.linspace(0.1, 1.0, 50)  # only 50 pixels above 0
    maps = torch.stack([S[1], binary, sparse])
    r = 0.3  # 307 pixels: above count(binary > 0) = 256, above count(sparse > 0) = 50
    out, p, clamped = rescale_maps(maps, r)
    assert clamped.tolist() == [False, True, True]
    # target above count(S > 0): the smallest p, whose sum is the nearest to the target
    assert p[1] == pytest.approx(np.exp(LOG_P_BRACKET[0])) and p[2] == pytest.approx(np.exp(LOG_P_BRACKET[0]))
    assert float(out[2].sum()) == pytest.approx(50, rel=1e-4)
    assert float(out[0].double().sum()) == pytest.approx(r * n_pix, rel=1e-4)
    # target below count(S == 1): the largest p
    out, p, clamped = rescale_maps(binary[None], 0.1)  # 102 < 256 ones
    assert clamped.tolist() == [True] and p[0] == pytest.approx(np.exp(LOG_P_BRACKET[1]))
    # r = 1 is never reachable for a normalised map (its minimum pixel is 0)
    _, _, clamped = rescale_maps(S, 1.0)
    assert clamped.all()


@pytest.mark.parametrize("r", [0.0, -0.2, 1.5, float("nan"), "a"])
def test_r_outside_unit_interval_is_refused(r):
    with pytest.raises(LayersweepError, match="r ="):
        rescale_maps(smooth_maps(3, 16), r)


def test_warm_start_on_a_pixel_subsample_at_224_px(monkeypatch):
    """At the study's 224x224 the solver first runs on every 12th pixel (a warm start), then on the full maps.
    Two maps defeat the subsample (its pixels all 0, or all 1) yet are reachable on the full grid: they must
    skip the warm start and still converge."""
    from layersweep.metrics import rescale

    size, r = 224, 0.3
    n_pix = size * size
    stride = n_pix // 4096
    S = smooth_maps(6, size)
    on_grid = torch.zeros(n_pix, dtype=torch.bool)
    on_grid[::stride] = True
    rest = torch.rand(n_pix, generator=torch.Generator().manual_seed(3)) * 0.98 + 0.01  # in (0, 1)
    zeros_on_grid = torch.where(on_grid, 0.0, rest).view(size, size)
    ones_on_grid = torch.where(on_grid, 1.0, rest).view(size, size)
    maps = torch.cat([S, zeros_on_grid[None], ones_on_grid[None]])
    widths = []
    newton = rescale._newton
    monkeypatch.setattr(rescale, "_newton", lambda log_s, *a: (widths.append(log_s.shape[1]), newton(log_s, *a))[1])
    out, p, clamped = rescale_maps(maps, r, rtol=1e-4)
    assert widths == [len(range(0, n_pix, stride)), n_pix]  # the warm start ran, then the full solve
    assert not clamped.any()
    sums = (maps.double() ** p[:, None, None]).sum((1, 2))  # float64: independent of the float32 solver sums
    np.testing.assert_array_less(np.abs(sums.numpy() / (r * n_pix) - 1), 2e-4)
    np.testing.assert_allclose(out.double().numpy(), (maps.double() ** p[:, None, None]).numpy(), rtol=1e-4, atol=1e-6)
