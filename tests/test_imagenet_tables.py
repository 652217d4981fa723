"""The papers' ImageNet tables as targets, on a fake ILSVRC2012 copy written here (layersweep.fake_imagenet) and named
by config.yaml's data.imagenet_root: each table's dry run plans only its studies' jobs (no head training, top1 where
the study explains the prediction), and LIFT-CAM Table 4 builds end to end on a cut-down liftcam-imagenet (random
VGG16 weights, 32 px, 3 images, two methods)."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from layersweep.fake_imagenet import write_fake_imagenet
from test_studies import SHARED_RULES, _study_of
from workflow import copy_project as _copy_project, edit_study as _edit_study, planned_jobs, planned_outputs, snakemake

pytestmark = pytest.mark.slow

FAKE_ROOT = "resources/fake-imagenet"


def _use_fake_imagenet(work):
    write_fake_imagenet(work / FAKE_ROOT, layout="devkit", n_images=24, image_size=64, seed=1)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["data"]["imagenet_root"] = FAKE_ROOT
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    work = _copy_project(tmp_path_factory.mktemp("imagenet-tables"))
    _use_fake_imagenet(work)
    return work


@pytest.mark.parametrize("table, study, shards, metric_jobs, top1", [
    ("liftcam-table4", "liftcam-imagenet", 16, 1, True),        # 1,000 images; core (insertion, deletion)
    ("liftcam-table5", "liftcam-imagenet", 16, 2, True),        # core and the pointing game
    ("shapcam-table1", "shapcam-imagenet", 32, 1, True),        # 2,000 images; core (AD, IC)
    ("shapcam-table3", "shapcam-imagenet-pointing-vgg16", 8, 2, False),  # 500 filtered images, the class's boxes
])
def test_each_imagenet_table_plans_only_its_studys_jobs(project, table, study, shards, metric_jobs, top1):
    proc = snakemake(project, "-n", f"tables/{table}.csv")
    jobs = planned_jobs(proc)
    own = {r for r in jobs if _study_of(r)}
    # Shap-CAM Table 3 has a ResNet-18 row too: its study is planned beside the VGG16 one
    others = {"shapcam-imagenet-pointing-resnet18"} if table == "shapcam-table3" else set()
    assert {_study_of(r) for r in own} == {study} | others
    assert set(jobs) - own <= SHARED_RULES | {"paper_table"} and jobs["paper_table"] == 1
    prefix = study.replace("-", "_") + "_"
    n_methods = 6 if study == "liftcam-imagenet" else 4
    assert jobs[f"{prefix}crops"] == 3  # test, and the two baseline splits
    assert jobs[f"{prefix}attribution"] == n_methods * shards
    assert jobs[f"{prefix}metric"] == metric_jobs * n_methods * shards
    assert (f"{prefix}top1" in jobs) == top1
    assert not any(r.endswith(("train_head", "frozen_features", "synthetic_voc")) for r in jobs)  # no head stage
    # torchvision's VGG16 (vgg16-397923af.pth), and ResNet-18's for Table 3
    assert jobs.get("download_weights", 0) == 1 + len(others)
    for out in planned_outputs(proc):
        assert out.startswith(("resources/", "tables/", f"studies/{study}/", *(f"studies/{o}/" for o in others))), out


def test_a_missing_imagenet_root_stops_the_crops_job_with_one_sentence(tmp_path_factory):
    work = _copy_project(tmp_path_factory.mktemp("imagenet-missing"))
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["data"]["imagenet_root"] = "resources/no-such-imagenet"
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(work, "studies/liftcam-imagenet/results/data/test.parquet", check=False, timeout=600)
    assert proc.returncode != 0
    log = (work / "studies/liftcam-imagenet/logs/crops/test.log").read_text()
    assert ("config key 'data.imagenet_root' is 'resources/no-such-imagenet', which is not a directory; it must "
            "hold either the devkit layout") in log
    assert not (work / "studies/liftcam-imagenet/results/data/test.parquet").exists()


# ---- one ImageNet table end to end

DEMO_METHODS = ["gradcam", "liftcam"]


def _demo_keys() -> dict:
    return {"demo": True, "device": "cpu", "model": {"init": "random"},
            "data": {"crop_size": 32, "n_images": 3, "shard_size": 4},
            "attribution": {"methods": DEMO_METHODS, "batch_size": 4, "n_baselines": 2},
            "metrics": {"compute": ["core"], "batch_size": 64}, "summary": {"n_boot": 200}}


@pytest.fixture(scope="module")
def demo_table(tmp_path_factory):
    from layersweep.studies import merge

    work = _copy_project(tmp_path_factory.mktemp("imagenet-demo"))
    _use_fake_imagenet(work)
    _edit_study(work, "liftcam-imagenet", lambda c: merge(c, _demo_keys()))
    start = time.perf_counter()
    snakemake(work, "tables/liftcam-table4.csv", timeout=1200)
    print(f"ImageNet demo (LIFT-CAM Table 4, fake ILSVRC2012): {time.perf_counter() - start:.0f} s")
    return work


def test_demo_table4_holds_the_papers_numbers_and_the_studys_summary(demo_table):
    table = pd.read_csv(demo_table / "tables" / "liftcam-table4.csv")
    summary = pd.read_parquet(demo_table / "studies/liftcam-imagenet/results/summary/core/plain.parquet")
    assert len(table) == 6 * 2
    for row in table.itertuples():
        if row.method in DEMO_METHODS:
            hit = summary[(summary.method == row.method) & (summary.metric == row.metric) & (summary.layer == 29)]
            assert row.ours == pytest.approx(hit["mean"].iloc[0]) and row.n == hit["n"].iloc[0] <= 3
        else:
            assert math.isnan(row.ours) and "does not run" in row.note
    lift = table.set_index(["paper_row", "column"])
    assert lift.loc[("LIFT-CAM", "Insertion"), "paper"] == 0.4712 and lift.loc[("LIFT-CAM", "Deletion"), "paper"] == 0.0866
    assert "Synthetic demo data, random weights" in (demo_table / "tables" / "liftcam-table4.html").read_text()


def test_demo_explains_the_models_top1_computed_once_before_attribution(demo_table):
    from layersweep.attribution import read_attribution_shard
    from layersweep.model import build_model
    from layersweep.preprocess import to_model_input

    data = demo_table / "studies/liftcam-imagenet/results/data"
    index, top1 = pd.read_parquet(data / "test.parquet"), pd.read_parquet(data / "test-top1.parquet")
    crops = np.load(data / "test_crops.npy")
    assert len(index) == 3 and list(top1["crop_id"]) == list(index["crop_id"])
    model = build_model("random", arch="vgg16", source="torchvision_imagenet", seed=0)
    with torch.no_grad():
        pred = model(to_model_input(crops)).argmax(1).numpy()
    assert (top1["top1"].to_numpy() == pred).all() and (top1["label"].to_numpy() == pred).all()
    assert (top1["true_label"] == index["label"]).all()
    shard = read_attribution_shard(demo_table / "studies/liftcam-imagenet/results/attributions/gradcam/shard-0.npz")
    target_of = dict(zip(top1["crop_id"], top1["label"]))
    assert [int(t) for t in shard.target] == [target_of[c] for c in shard.crop_ids]
