"""Model stage: cached features reproduce the full model, and the head learns the demo data."""
import numpy as np
import pytest
import torch

from layersweep.errors import LayersweepError
from layersweep.model import (accuracy_report, build_vgg11, frozen_features, load_model, save_checkpoint,
                              train_on_features, trainable_part)
from layersweep.preprocess import to_model_input


@pytest.fixture(scope="module")
def demo_splits(tmp_path_factory):
    from layersweep.data import build_split
    from layersweep.synthetic import write_synthetic_voc

    voc = write_synthetic_voc(tmp_path_factory.mktemp("voc") / "VOCsynthetic", n_images=200, image_size=96, seed=1)
    return {s: build_split(voc, s, 32, progress=False) for s in ("train", "val", "test")}


@pytest.mark.parametrize("train", ["head", "classifier"])
def test_cached_features_give_full_model_logits(train):
    model = build_vgg11("random", seed=3)
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    feats = frozen_features(model, crops, train, batch_size=2, device="cpu", progress=False)
    with torch.no_grad():
        full = model(to_model_input(crops))
        cached = trainable_part(model, train)(torch.as_tensor(feats))
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)


def test_head_training_lowers_val_loss_and_beats_chance(demo_splits, tmp_path):
    model = build_vgg11("random", seed=0)
    feats = {s: frozen_features(model, c, "head", batch_size=64, device="cpu", progress=False)
             for s, (c, _) in demo_splits.items()}
    labels = {s: idx["label"].to_numpy() for s, (_, idx) in demo_splits.items()}
    part = trainable_part(model, "head")
    best, history = train_on_features(part, feats["train"], labels["train"], feats["val"], labels["val"],
                                      lr=1e-2, batch_size=64, max_epochs=40, patience=5, seed=0, device="cpu")
    assert history["val_loss"].min() < history["val_loss"].iloc[0]
    part.load_state_dict(best)
    report = accuracy_report(part, feats["test"], labels["test"], [f"c{i}" for i in range(20)], "cpu")
    # chance is 5%; the synthetic classes carry a colour/texture signal a linear head on random features learns
    assert report["accuracy"] > 0.25, report["accuracy"]
    # the per-class numbers are consistent with the overall one
    n = sum(v["n"] for v in report["per_class"].values())
    hits = sum(v["n"] * v["accuracy"] for v in report["per_class"].values() if v["n"])
    assert n == len(labels["test"]) and abs(hits / n - report["accuracy"]) < 1e-9

    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, part, best, init="random", train="head", seed=0)
    reloaded = load_model(ckpt)
    x = to_model_input(demo_splits["test"][0][:4])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model.eval()(x))


def test_early_stopping_returns_the_best_epochs_state():
    """Val labels unrelated to train labels: val loss bottoms out after a few epochs, then rises as the
    head memorises train. Training must stop `patience` epochs after the minimum and hand back that epoch's
    weights, not the last ones."""
    rng = np.random.default_rng(0)
    xt, yt = rng.normal(size=(64, 16)).astype(np.float32), rng.integers(0, 4, 64)
    xv, yv = rng.normal(size=(64, 16)).astype(np.float32), rng.integers(0, 4, 64)
    torch.manual_seed(0)
    part = torch.nn.Linear(16, 4)
    max_epochs, patience = 200, 3
    best, history = train_on_features(part, xt, yt, xv, yv, lr=0.05, batch_size=16, max_epochs=max_epochs,
                                      patience=patience, seed=0, device="cpu", progress=False)
    assert len(history) < max_epochs  # it stopped early
    best_epoch = int(history["val_loss"].idxmin())
    assert len(history) == best_epoch + 1 + patience  # exactly `patience` epochs without improvement
    assert history["best"].tolist() == [i == best_epoch for i in range(len(history))]
    last = {k: v.clone() for k, v in part.state_dict().items()}
    assert not torch.equal(last["weight"], best["weight"])  # the returned state is not the last epoch's
    with torch.no_grad():
        part.load_state_dict(best)
        val_loss = torch.nn.functional.cross_entropy(part(torch.as_tensor(xv)), torch.as_tensor(yv)).item()
    assert val_loss == pytest.approx(history["val_loss"].min(), rel=1e-6)  # the best epoch's weights


def test_weights_file_is_loaded_and_bad_files_are_named(tmp_path):
    from torchvision.models import vgg11

    torch.manual_seed(7)
    ref = vgg11(weights=None)
    good = tmp_path / "vgg11-test.pth"
    torch.save(ref.state_dict(), good)
    model = build_vgg11("imagenet", good)
    torch.testing.assert_close(model.features[0].weight, ref.features[0].weight)
    assert model.classifier[-1].out_features == 20

    bad = tmp_path / "broken.pth"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(LayersweepError, match="broken.pth"):
        build_vgg11("imagenet", bad)
    with pytest.raises(LayersweepError, match="model.weights"):
        build_vgg11("imagenet", tmp_path / "absent.pth")


def test_corrupt_or_missing_checkpoint_is_named(tmp_path):
    part = torch.nn.Linear(4096, 20)
    good = tmp_path / "head.pt"
    save_checkpoint(good, part, part.state_dict(), init="random", train="head", seed=0)
    cases = {"truncated.pt": good.read_bytes()[:2000], "garbage.pt": b"not a checkpoint"}
    torch.save({"state_dict": part.state_dict()}, tmp_path / "nokeys.pt")  # a checkpoint of something else
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    for name in [*cases, "nokeys.pt", "absent.pt"]:
        with pytest.raises(LayersweepError, match=rf"^the model checkpoint '.*{name}' is missing or corrupt; "
                                                  r"rerun the train_head rule\.$"):
            load_model(tmp_path / name)


@pytest.mark.parametrize("empty", ["train", "val"])
def test_training_on_an_empty_split_is_refused(empty):
    feats = {s: np.zeros((0 if s == empty else 8, 16), np.float32) for s in ("train", "val")}
    labels = {s: np.zeros(len(f), np.int64) for s, f in feats.items()}
    with pytest.raises(LayersweepError, match="train or val split has no crops"):
        train_on_features(torch.nn.Linear(16, 4), feats["train"], labels["train"], feats["val"], labels["val"],
                          lr=0.1, batch_size=4, max_epochs=2, patience=1, seed=0, device="cpu", progress=False)


# ---- model.arch: every torchvision VGG, with or without BatchNorm
def test_unknown_arch_and_source_are_one_sentence_naming_the_key():
    from layersweep.model import build_model, check_arch

    with pytest.raises(LayersweepError, match=r"^config key 'model\.arch' has the unknown value 'vgg12'; use one of vgg11, .*\.$"):
        check_arch("vgg12")
    with pytest.raises(LayersweepError, match=r"'model\.arch'"):
        build_model("random", arch="inception_v3")  # no adapter (docs/architectures.md)
    with pytest.raises(LayersweepError, match=r"'model\.source' has the unknown value 'caffe'"):
        check_arch("vgg16", "caffe")
    with pytest.raises(LayersweepError, match=r"'model\.arch' is 'vgg11' but 'model\.source: torchray_voc'"):
        check_arch("vgg11", "torchray_voc")


def _features_state(cfg, batch_norm):
    """A VGG state dict with the keys of torchvision's `features` only (the checks read these)."""
    from torchvision.models.vgg import cfgs, make_layers

    return {f"features.{k}": v for k, v in make_layers(cfgs[cfg], batch_norm=batch_norm).state_dict().items()}


def test_a_bn_checkpoint_in_a_plain_arch_names_the_file(tmp_path):
    from layersweep.model import build_model

    bn_file = tmp_path / "vgg11_bn-6002323d.pth"
    torch.save(_features_state("A", True), bn_file)
    with pytest.raises(LayersweepError, match=r"^the weights file '.*vgg11_bn-6002323d\.pth' holds a VGG with BatchNorm but config key 'model\.arch' is 'vgg11'; set model\.arch to 'vgg11_bn'"):
        build_model("imagenet", bn_file, arch="vgg11")
    plain_file = tmp_path / "vgg13-19584684.pth"
    torch.save(_features_state("B", False), plain_file)
    with pytest.raises(LayersweepError, match=r"vgg13-19584684\.pth' holds a VGG without BatchNorm but config key 'model\.arch' is 'vgg13_bn'"):
        build_model("imagenet", plain_file, arch="vgg13_bn")
    with pytest.raises(LayersweepError, match=r"vgg13-19584684\.pth' holds a VGG with 10 conv layers but config key 'model\.arch' is 'vgg16' \(13\)"):
        build_model("imagenet", plain_file, arch="vgg16")


def test_bn_arch_round_trips_through_the_head_checkpoint(tmp_path):
    from layersweep.model import build_model

    model = build_model("random", arch="vgg11_bn", seed=2)
    assert not model.training and model.classifier[-1].out_features == 20
    ckpt = tmp_path / "head.pt"
    head = model.classifier[-1].state_dict()
    save_checkpoint(ckpt, model.classifier[-1], head, init="random", train="head", seed=2, arch="vgg11_bn")
    reloaded = load_model(ckpt)
    assert isinstance(reloaded.features[1], torch.nn.BatchNorm2d) and len(reloaded.features) == 29
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))


def test_receptive_fields_of_the_other_archs():
    from torchvision.models.vgg import cfgs, make_layers

    from layersweep.layers import layer_specs

    plain = layer_specs(make_layers(cfgs["D"], batch_norm=False))  # vgg16
    bn = layer_specs(make_layers(cfgs["D"], batch_norm=True))      # vgg16_bn
    # closed form: 13 3x3 convs (stride 1) and 5 2x2 pools -> field 212, jump 32 at the last pool
    assert (plain[-1].rf_size, plain[-1].jump, plain[-1].offset) == (212, 32, -90)
    assert len(bn) == len(plain) + 13 and bn[1].kind == "BatchNorm2d" and bn[1].rf_size == bn[0].rf_size
    assert [s.rf_size for s in bn if s.kind != "BatchNorm2d"] == [s.rf_size for s in plain]


@pytest.mark.parametrize("arch", ["vgg11", "vgg13_bn", "vgg19"])
def test_build_features_is_the_arch_s_own(arch):
    from torchvision import models

    from layersweep.model import build_features

    with torch.device("meta"):  # the structure only
        assert str(build_features(arch)) == str(getattr(models, arch)(weights=None).features)
    ceil = [m.ceil_mode for m in build_features("vgg16", "torchray_voc") if isinstance(m, torch.nn.MaxPool2d)]
    assert ceil == [True] * 5
