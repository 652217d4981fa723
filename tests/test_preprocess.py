"""uint8 crops to the model's input, against literal arithmetic on a non-square crop (an H/W transpose or a
channel mix-up would be invisible on square crops or on expected values built with the same functions)."""
import numpy as np
import torch

from layersweep.preprocess import denormalize, normalize, to_model_input, to_pixels

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, written out: the independent side
STD = (0.229, 0.224, 0.225)


def _crops():
    """2 crops of 3 rows x 5 columns, every (crop, row, col, channel) value distinct."""
    return (np.arange(2 * 3 * 5 * 3).reshape(2, 3, 5, 3) * 2 + 7).astype(np.uint8)


def test_to_pixels_and_normalize_by_hand():
    crops = _crops()
    pixels, x = to_pixels(crops), to_model_input(crops)
    assert pixels.shape == x.shape == (2, 3, 3, 5)
    assert pixels.dtype == x.dtype == torch.float32
    for n in range(2):
        for row in range(3):
            for col in range(5):
                for c in range(3):
                    v = int(crops[n, row, col, c]) / 255.0
                    assert abs(pixels[n, c, row, col].item() - v) < 1e-7
                    assert abs(x[n, c, row, col].item() - (v - MEAN[c]) / STD[c]) < 1e-6
    torch.testing.assert_close(normalize(pixels), x, rtol=0, atol=0)


def test_normalize_keeps_float64_and_denormalize_inverts_it():
    pixels = torch.rand(2, 3, 4, 7, dtype=torch.float64)
    x = normalize(pixels)
    assert x.dtype == torch.float64
    for c in range(3):
        torch.testing.assert_close(x[:, c], (pixels[:, c] - MEAN[c]) / STD[c], rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(denormalize(x), pixels, rtol=1e-15, atol=1e-15)
