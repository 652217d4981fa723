"""Scoring primitives against independent computations: formulas, a naive per-point loop, pytorch-grad-cam."""
import numpy as np
import pytest
import torch
from torch import nn

from layersweep.errors import LayersweepError
from layersweep.metrics import (average_drop, average_drop_terms, crop_scores, curve_counts, deletion_insertion,
                                explanation_images, explanation_scores, image_scores, increase_in_confidence,
                                increase_in_confidence_terms, normalize_maps)
from layersweep.preprocess import IMAGENET_MEAN, IMAGENET_STD

SIZE = 16


def tiny_model(seed=0):
    """A VGG-shaped classifier (features / avgpool / classifier) with 20 logits, small enough for a naive loop."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 20),
    )
    with torch.no_grad():
        m[-1].weight.mul_(8.0)  # spread the softmax so perturbations move the scores visibly
    return m.eval()


def crops(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    pix = torch.rand(n, 3, SIZE, SIZE, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pix - mean) / std


def score_one(model, img, c):
    with torch.no_grad():
        return float(torch.softmax(model(img[None]), dim=1)[0, c])


def gaussian_blur_naive(img, kernel, sigma):
    """Independent blur: explicit 2-D Gaussian kernel, reflect padding, per-channel conv."""
    half = kernel // 2
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    g /= g.sum()
    k2 = torch.tensor(np.outer(g, g), dtype=img.dtype)
    padded = torch.nn.functional.pad(img[None], (half, half, half, half), mode="reflect")
    return torch.nn.functional.conv2d(padded, k2.expand(3, 1, kernel, kernel), groups=3)[0]


def naive_curves(model, img, smap, c, curve_points, kernel, sigma):
    """The report's way: one forward per curve point, pixels removed / restored by a Python-level index."""
    hw = smap.numel()
    order = np.argsort(-smap.reshape(-1).numpy(), kind="stable")
    blurred = gaussian_blur_naive(img, kernel, sigma)
    dele, ins = [], []
    for k in np.linspace(0, 1, curve_points):
        n = int(np.floor(k * hw + 0.5))
        idx = torch.as_tensor(order[:n])
        d = img.clone().reshape(3, -1)
        d[:, idx] = 0.0
        dele.append(score_one(model, d.reshape(img.shape), c))
        b = blurred.clone().reshape(3, -1)
        b[:, idx] = img.reshape(3, -1)[:, idx]
        ins.append(score_one(model, b.reshape(img.shape), c))
    return np.array(dele), np.array(ins)


def bilinear_naive(m, H, W):
    """Independent bilinear upsampling, align_corners=False: source coordinate (i + 0.5) * in/out - 0.5,
    clamped at the borders, separable linear interpolation."""
    h, w = m.shape
    ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    rows = np.stack([np.interp(xs, np.arange(w), m[i]) for i in range(h)])
    return np.stack([np.interp(ys, np.arange(h), rows[:, j]) for j in range(W)], axis=1)


# ---------------------------------------------------------------------------------------------------------
def test_ad_ic_formulas_on_hand_made_scores():
    Y = np.array([0.5, 0.2, 0.8, 0.4, 0.3])
    O = np.array([0.25, 0.3, 0.8, 0.0, np.nan])  # last: a constant map's NaN
    np.testing.assert_allclose(average_drop_terms(Y, O)[:4], [50.0, 0.0, 0.0, 100.0])
    assert np.isnan(average_drop_terms(Y, O)[4])
    np.testing.assert_array_equal(increase_in_confidence_terms(Y, O)[:4], [0.0, 100.0, 0.0, 0.0])
    assert np.isnan(increase_in_confidence_terms(Y, O)[4])
    assert average_drop(Y, O) == pytest.approx(150.0 / 4)
    assert increase_in_confidence(Y, O) == pytest.approx(25.0)
    # torch path gives the same numbers
    assert float(average_drop(torch.tensor(Y), torch.tensor(O))) == pytest.approx(150.0 / 4)
    assert float(increase_in_confidence(torch.tensor(Y), torch.tensor(O))) == pytest.approx(25.0)
    # Y == 0: nothing can drop
    assert average_drop_terms(np.array([0.0]), np.array([0.1]))[0] == 0.0


def test_normalize_maps_matches_independent_bilinear_and_minmax():
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(4, 3, 5, generator=g)
    raw[2] = 7.0  # constant
    raw[3, 0, 0] = float("nan")  # cannot be normalised either
    out, const = normalize_maps(raw.half(), (12, 10), eps=1e-6)
    assert const.tolist() == [False, False, True, True]
    for i in range(2):
        up = bilinear_naive(raw[i].half().float().numpy(), 12, 10)
        want = (up - up.min()) / (up.max() - up.min())
        np.testing.assert_allclose(out[i].numpy(), want, atol=1e-5)
        assert out[i].max() == 1.0 and out[i].min() == 0.0
    assert torch.all(out[2:] == 0)


def test_curve_counts_round_half_up():
    # k * 10 = 0, 2.5, 5, 7.5, 10: half up gives 3 and 8 (numpy's half-to-even would give 2 and 8)
    assert curve_counts(5, 10).tolist() == [0, 3, 5, 8, 10]
    with pytest.raises(LayersweepError):
        curve_counts(1, 10)


@pytest.mark.parametrize("curve_points", [7, 30])
def test_deletion_insertion_equals_naive_loop(curve_points):
    model = tiny_model()
    x = crops(2)
    targets = torch.tensor([3, 11])
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(3, SIZE, SIZE, generator=g)
    maps[1] = torch.round(maps[1] * 4) / 4  # five levels: many ties, so the stable order matters
    crop_index = torch.tensor([0, 1, 0])    # two maps of crop 0 share its base scores
    res = deletion_insertion(model, x, maps, targets, crop_index=crop_index, curve_points=curve_points,
                             blur_kernel=5, blur_sigma=2.0, batch_size=5)  # batches straddle maps
    for m in range(3):
        c = int(crop_index[m])
        d, i = naive_curves(model, x[c], maps[m], int(targets[c]), curve_points, 5, 2.0)
        np.testing.assert_allclose(res["deletion_curve"][m].numpy(), d, atol=1e-5)
        np.testing.assert_allclose(res["insertion_curve"][m].numpy(), i, atol=1e-5)
        k = np.linspace(0, 1, curve_points)
        assert float(res["deletion_auc"][m]) == pytest.approx(np.trapezoid(d, k), abs=1e-5)
        assert float(res["insertion_auc"][m]) == pytest.approx(np.trapezoid(i, k), abs=1e-5)


def test_crop_scores_are_the_curve_ends():
    model = tiny_model()
    x = crops(2)
    t = torch.tensor([0, 19])
    base = crop_scores(model, x, t, blur_kernel=5, blur_sigma=2.0, batch_size=3)
    for j in range(2):
        assert float(base["original"][j]) == pytest.approx(score_one(model, x[j], int(t[j])), abs=1e-6)
        assert float(base["blurred"][j]) == pytest.approx(
            score_one(model, gaussian_blur_naive(x[j], 5, 2.0), int(t[j])), abs=1e-6)
        assert float(base["deleted"][j]) == pytest.approx(score_one(model, torch.zeros_like(x[j]), int(t[j])), abs=1e-6)
    with pytest.raises(LayersweepError, match="20"):
        crop_scores(model, x, torch.tensor([0, 20]))


def test_explanation_image_spaces():
    x = crops(1)
    s = torch.rand(1, SIZE, SIZE)
    torch.testing.assert_close(explanation_images(x, s, "normalized"), s[:, None] * x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = x * std + mean
    torch.testing.assert_close(explanation_images(x, s, "pixel"), (s[:, None] * pixels - mean) / std)
    with pytest.raises(LayersweepError, match="mask_space"):
        explanation_images(x, s, "rgb")


def test_ad_ic_agree_with_pytorch_grad_cam():
    """pytorch-grad-cam's CamMultImageConfidenceChange multiplies the *normalised* tensor by the cam (our
    mask_space 'normalized') and returns target(model(x * cam)) - target(model(x)) = O - Y with the target we
    give it; ClassifierOutputSoftmaxTarget(c) makes that target our score. So, per image:
        AD term = max(0, -(O - Y)) / Y * 100,   IC indicator = IncreaseInConfidence() * 100 = 1[O - Y > 0] * 100,
    with Y recovered as O - (O - Y) from the same metric called with return_diff=False."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = tiny_model(seed=2)
    x = crops(6, seed=4)
    t = torch.tensor([1, 5, 7, 2, 19, 0])
    raw = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(9))
    maps01, const = normalize_maps(raw, SIZE)
    assert not const.any()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    cams = maps01.numpy().astype(np.float32)
    diff = CamMultImageConfidenceChange()(x, cams, targets, model)
    O_ref = CamMultImageConfidenceChange()(x, cams, targets, model, return_diff=False)
    Y_ref = O_ref - diff
    ic_ref = IncreaseInConfidence()(x, cams, targets, model) * 100
    ad_ref = np.maximum(-diff, 0) / Y_ref * 100

    Y = image_scores(model, x, t, batch_size=4)
    O = explanation_scores(model, x, maps01, t, batch_size=4)
    np.testing.assert_allclose(average_drop_terms(Y, O).numpy(), ad_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(increase_in_confidence_terms(Y, O).numpy(), ic_ref)
    assert 0 < ic_ref.sum() < 600 and (ad_ref > 1).any()  # both outcomes occur: the comparison has teeth
