"""model.train: full (layersweep/finetune.py): early stopping keeps the best state, the checkpoint loads back
through layersweep.model.load_model, and a narrow VGG keeps model.arch's layer indices."""
import numpy as np
import pandas as pd
import pytest
import torch

from layersweep.errors import LayersweepError
from layersweep.finetune import (accuracy_summary, build_vgg, finetune, predictions, save_full_checkpoint)
from layersweep.model import build_features, load_model


def _data(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    crops = rng.integers(0, 40, (n, 32, 32, 3)).astype(np.uint8)
    for i, y in enumerate(labels):  # a class-coloured square: learnable in a few steps
        crops[i, 8:24, 8:24, y] = 255
    return crops, labels


def test_narrow_vgg_keeps_the_layer_indices():
    m = build_vgg("vgg11_bn", 6, width=0.125)
    ref = build_features("vgg11_bn")
    assert [type(a) for a in m.features] == [type(b) for b in ref]
    assert m.features[0].out_channels == 8 and m(torch.zeros(1, 3, 32, 32)).shape == (1, 6)
    with pytest.raises(LayersweepError, match="model.width"):
        build_vgg("vgg11", 6, width=0.5, init="imagenet")


def test_finetune_keeps_the_best_state_and_the_checkpoint_loads_back(tmp_path):
    xt, yt = _data(64, 0)
    xv, yv = _data(16, 1)
    model = build_vgg("vgg11", 3, width=0.125, seed=0)
    best, history = finetune(model, xt, yt, xv, yv, lr=1e-3, weight_decay=1e-4, batch_size=16, max_epochs=4,
                             patience=2, seed=0, device="cpu", progress=False)
    assert history["best"].sum() == 1
    assert history.loc[history["best"], "val_loss"].iloc[0] == history["val_loss"].min()
    assert len(history) <= 4 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    model.load_state_dict(best)
    # the best state's val loss is the history's minimum
    with torch.no_grad():
        from layersweep.preprocess import to_model_input
        loss = torch.nn.functional.cross_entropy(model.eval()(to_model_input(xv)), torch.as_tensor(yv)).item()
    assert loss == pytest.approx(history["val_loss"].min(), rel=1e-5)
    path = tmp_path / "head.pt"
    save_full_checkpoint(path, model, best, arch="vgg11", init="random", seed=0, n_classes=3, width=0.125)
    loaded = load_model(path)
    x = to_model_input(xv[:4])
    torch.testing.assert_close(loaded(x), model.eval()(x))
    preds = predictions(model, xv, yv, [f"v{i}" for i in range(16)], device="cpu")
    report = accuracy_summary(preds, ["a", "b", "c"])
    assert report["n_correct"] == int((preds["pred"] == yv).sum()) and report["n"] == 16
    assert sum(c["n"] for c in report["per_class"].values()) == 16
