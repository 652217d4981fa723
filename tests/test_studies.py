"""The papers' set-ups as Snakemake modules below studies/<name>/, and their tables as targets.

Dry runs on the real configs (nothing can run here: no VOC, no weights): each table plans only its studies'
jobs, the report study's targets plan nothing of the studies, a broken study config is one sentence. Then one
paper study runs end to end on synthetic data (`demo_study`): LIFT-CAM's VOC set-up with a TorchRay-layout
VGG16 state dict written here (random weights), image mode, Tables 2 and 3 built and checked against the
study's own summary and a naive cosine loop, then what a config change reruns. The study run is the session's
`demo_study` (tests/conftest.py), shared with tests/test_kill.py.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow import (DEMO_METHODS, N_DEMO, POINTING_GAME, copy_project, edit_study, planned_jobs,
                      planned_outputs, snakemake)

pytestmark = pytest.mark.slow

SHARED_RULES = {"download_voc", "extract_voc", "download_weights"}  # the report study's: resources/ is shared
STUDY_MODULES = {"liftcam-voc": "liftcam_voc_", "liftcam-voc-pi1": "liftcam_voc_pi1_",
                 "liftcam-voc-pi10": "liftcam_voc_pi10_", "liftcam-voc-pi100": "liftcam_voc_pi100_",
                 "liftcam-voc-pi10000": "liftcam_voc_pi10000_", "shapcam-voc-torchray": "shapcam_voc_torchray_",
                 "shapcam-voc-vgg11": "shapcam_voc_vgg11_", "liftcam-imagenet": "liftcam_imagenet_",
                 "liftcam-imagenet-pi1": "liftcam_imagenet_pi1_", "liftcam-imagenet-pi10": "liftcam_imagenet_pi10_",
                 "liftcam-imagenet-pi100": "liftcam_imagenet_pi100_", "shapcam-imagenet": "shapcam_imagenet_",
                 "shapcam-imagenet-pointing-vgg16": "shapcam_imagenet_pointing_vgg16_",
                 "shapcam-imagenet-pointing-resnet18": "shapcam_imagenet_pointing_resnet18_",
                 "refinecam-imagenet": "refinecam_imagenet_", "refinecam-shapes": "refinecam_shapes_",
                 "refinecam-shapes-cpu": "refinecam_shapes_cpu_", "report-resnet18": "report_resnet18_",
                 "report-resnet50": "report_resnet50_", "report-vit-b16": "report_vit_b16_",
                 "report-swin-t": "report_swin_t_"}


def _study_of(rule: str) -> str | None:
    """The study whose module a planned rule belongs to (the longest matching prefix), None for the main's."""
    hits = [s for s, prefix in STUDY_MODULES.items() if rule.startswith(prefix)]
    return max(hits, key=len) if hits else None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("studies"))


@pytest.mark.parametrize("table, studies", [
    ("liftcam-table1", {"liftcam-voc-pi1", "liftcam-voc-pi10", "liftcam-voc-pi100", "liftcam-imagenet-pi1",
                        "liftcam-imagenet-pi10", "liftcam-imagenet-pi100"}),
    ("liftcam-table2", {"liftcam-voc", "liftcam-voc-pi10000"}),
    ("liftcam-table3", {"liftcam-voc", "liftcam-imagenet"}),
    ("shapcam-table2", {"shapcam-voc-torchray", "shapcam-voc-vgg11"}),
])
def test_each_table_plans_only_its_studies(scratch, table, studies):
    proc = snakemake(scratch, "-n", f"tables/{table}.csv")
    jobs = planned_jobs(proc)
    own = {r for r in jobs if _study_of(r)}
    assert {_study_of(r) for r in own} == studies
    assert set(jobs) - own <= SHARED_RULES | {"paper_table", "table_cosine"} and jobs["paper_table"] == 1
    for out in planned_outputs(proc):
        assert out.startswith(("resources/", "tables/")) or any(out.startswith(f"studies/{s}/") for s in studies), out
    if table == "liftcam-table3":  # 6 methods x 16 shards of 64 samples (1,000), the last ReLU only
        # metrics core (AD, IC) and add (ADD): one job each per shard
        assert jobs["liftcam_voc_attribution"] == 96 and jobs["liftcam_voc_metric"] == 2 * 96
        assert "liftcam_voc_metric_rescaled" not in jobs and "liftcam_voc_train_head" not in jobs
        assert jobs["download_weights"] == 2  # TorchRay's VGG16 (VOC) and torchvision's (ImageNet)
    if table == "liftcam-table2":  # the cosine reads weights: no scoring at all
        assert jobs["table_cosine"] == 1 and not any("metric" in r for r in jobs)
        assert jobs["liftcam_voc_pi10000_attribution"] == 8  # 500 samples
    if table == "shapcam-table2":  # the VGG11 model trains its head; TorchRay's does not
        assert jobs["shapcam_voc_vgg11_train_head"] == 1 and "shapcam_voc_torchray_train_head" not in jobs


@pytest.mark.parametrize("target", [[], ["figures/fig5.pdf"], ["figures/fig5.pdf", "--configfile", "config/demo.yaml"]])
def test_report_study_targets_plan_nothing_of_the_studies(scratch, target):
    proc = snakemake(scratch, "-n", *target)
    jobs = planned_jobs(proc)
    assert jobs and not [r for r in jobs if _study_of(r) or r in ("paper_table", "table_cosine")]
    assert not [o for o in planned_outputs(proc) if o.startswith(("studies/", "tables/"))]
    assert (target or ["figures/fig5.pdf"])[0] in planned_outputs(proc)  # today's paths
    if "config/demo.yaml" in target:  # the demo's synthetic VOC is the report study's alone
        assert jobs["synthetic_voc"] == 1 and "resources/VOCsynthetic" in planned_outputs(proc)


def test_study_config_missing_a_key_stops_with_one_sentence(scratch):
    path = scratch / "config" / "studies" / "broken.yaml"
    own = yaml.safe_load((scratch / "config" / "studies" / "liftcam-voc.yaml").read_text())
    del own["model"]["source"]
    path.write_text(yaml.safe_dump(own))
    try:
        proc = snakemake(scratch, "-n", "figures/fig5.pdf", check=False)
    finally:
        path.unlink()
    assert proc.returncode != 0
    assert ("layersweep: the study config 'config/studies/broken.yaml' lacks the key 'model.source'; a study "
            "states its model, data and methods itself") in proc.stderr
    assert "Traceback" not in proc.stderr and not (scratch / "studies").exists()


# ---- one paper study end to end, offline

def test_demo_study_builds_its_tables_below_its_prefix(demo_study):
    work = demo_study["work"]
    for table in ("liftcam-table2", "liftcam-table3"):
        for ext in ("csv", "md", "html"):
            assert (work / "tables" / f"{table}.{ext}").stat().st_size > 200
    assert not (work / "results").exists() and not (work / "figures").exists()  # the report study: untouched
    assert sorted(p.name for p in (work / "studies").iterdir()) == ["liftcam-voc", "liftcam-voc-pi10000"]
    index = pd.read_parquet(work / "studies" / "liftcam-voc" / "results" / "data" / "test.parquet")
    assert "boxes" in index.columns and (index["object_index"] == -1).all()  # image mode
    # the energy pointing game of image mode, with its chance level, for every method
    game = pd.read_parquet(work / POINTING_GAME)
    plain = game[game["rescale_r"].isna()].set_index(["method", "metric"])
    assert set(game["method"]) == set(DEMO_METHODS) and game["rescale_r"].isna().all()  # rescale.r: [] in studies
    for method in DEMO_METHODS:
        share, chance = plain.loc[(method, "pointing_game"), "mean"], plain.loc[(method, "pointing_chance"), "mean"]
        assert 0 < chance <= 100 and (math.isnan(share) or 0 <= share <= 100)


def test_demo_table3_holds_the_papers_numbers_and_the_studys_summary(demo_study):
    work = demo_study["work"]
    table = pd.read_csv(work / "tables" / "liftcam-table3.csv", keep_default_na=False, na_values=[""])
    numbers = pd.read_csv(work / "config" / "paper-numbers.csv")
    summary = pd.read_parquet(work / "studies" / "liftcam-voc" / "results" / "summary" / "core" / "plain.parquet")
    assert len(table) == 6 * 3 and set(table["layer"]) == {29} and set(table["model"]) == {"vgg16 (torchray_voc)"}
    for row in table.itertuples():
        paper = numbers[(numbers["paper"] == "LIFT-CAM") & (numbers["table"] == 3) & (numbers["row"] == row.paper_row)
                        & (numbers["metric"] == row.column) & (numbers["dataset"] == "VOC")]["value"]
        assert row.paper == paper.item()
        ours = summary[(summary["method"] == row.method) & (summary["layer"] == 29) & (summary["metric"] == row.metric)]
        if row.method not in DEMO_METHODS:
            assert math.isnan(row.ours) and row.n == 0
            assert row.note == f"study 'liftcam-voc' does not run {row.method} (attribution.methods)"
            continue
        if row.metric in ("ad", "ic"):
            pass
        else:  # ADD: metric add's own summary
            assert ours.empty
            add = pd.read_parquet(work / "studies" / "liftcam-voc" / "results" / "summary" / "add" / "plain.parquet")
            ours = add[(add["method"] == row.method) & (add["layer"] == 29) & add["rescale_r"].isna()]
        assert len(ours) == 1 and row.n == ours["n"].item() and row.n + ours["n_constant"].item() == N_DEMO
        if row.n:
            assert row.ours == pytest.approx(ours["mean"].item(), abs=1e-9)
            assert row.ci_low <= row.ours <= row.ci_high
        else:
            assert math.isnan(row.ours) and row.note == "every map was constant (no value)"
    assert table["n"].sum() > 0
    md = (work / "tables" / "liftcam-table3.md").read_text()
    assert "| Grad-CAM | gradcam | liftcam-voc | vgg16 (torchray_voc) | features.29 | 32.70 |" in md
    page = (work / "tables" / "liftcam-table3.html").read_text()
    assert "Synthetic demo data" in page and "Configuration used: study liftcam-voc" in page


def test_demo_table2_cosine_is_the_naive_loop_over_the_shards(demo_study):
    work = demo_study["work"]
    table = pd.read_csv(work / "tables" / "liftcam-table2.csv")
    att = work / "studies"

    def weights(study, method):
        out = {}
        for path in sorted((att / study / "results" / "attributions" / method).glob("shard-*.npz")):
            z = np.load(path)
            out.update({str(c): [float(v) for v in w] for c, w in zip(z["crop_id"], z["weights_29"])})
        return out

    ref = weights("liftcam-voc-pi10000", "shapcam_pi")
    assert len(ref) == N_DEMO - 1
    assert sorted(table.loc[table["n"] > 0, "method"]) == sorted(DEMO_METHODS)
    for row in table.itertuples():
        if row.method not in DEMO_METHODS:
            assert math.isnan(row.ours) and "does not run" in row.note
            continue
        ours = weights("liftcam-voc", row.method)
        cosines = []
        for crop, r in ref.items():  # the reference holds a prefix of liftcam-voc's samples
            w = ours[crop]
            nw, nr = math.sqrt(sum(x * x for x in w)), math.sqrt(sum(x * x for x in r))
            if nw > 0 and nr > 0:
                cosines.append(sum(x * y for x, y in zip(w, r)) / (nw * nr))
        assert row.n == len(cosines) and row.layer == 29
        if cosines:
            assert row.ours == pytest.approx(sum(cosines) / len(cosines), abs=1e-6)
            assert -1 - 1e-9 <= row.ci_low <= row.ours <= row.ci_high <= 1 + 1e-9
    assert set(table["paper"]) == {0.404, 0.329, 0.327, 0.181, 0.888, 0.918}


def test_demo_study_config_change_reruns_only_that_study(demo_study):
    work = demo_study["work"]
    targets = ("tables/liftcam-table3.csv", "tables/liftcam-table2.csv")
    assert planned_jobs(snakemake(work, "-n", *targets)) == {}
    # another study's config: nothing of these tables (the shared run's files are restored after each edit)
    other = (work / "config" / "studies" / "shapcam-voc-vgg11.yaml").read_text()
    edit_study(work, "shapcam-voc-vgg11", lambda c: {**c, "seed": 7})
    try:
        assert planned_jobs(snakemake(work, "-n", *targets)) == {}
    finally:
        (work / "config" / "studies" / "shapcam-voc-vgg11.yaml").write_text(other)
    # this study's scoring option: its scoring, its summary and its table; not its attribution, not the reference
    original = (work / "config" / "studies" / "liftcam-voc.yaml").read_text()
    edit_study(work, "liftcam-voc", lambda c: {**c, "metrics": {**c["metrics"], "blur_sigma": 3.0}})
    try:
        jobs = planned_jobs(snakemake(work, "-n", *targets))
    finally:
        (work / "config" / "studies" / "liftcam-voc.yaml").write_text(original)
    assert jobs == {"liftcam_voc_metric": len(DEMO_METHODS), "liftcam_voc_summary_metric": 1, "paper_table": 2}


def test_demo_study_report_renders_the_tables_and_the_config_as_yaml(demo_study):
    work = demo_study["work"]
    snakemake(work, "--report", "report.html", "tables/liftcam-table3.csv", "tables/liftcam-table2.csv")
    html = (work / "report.html").read_text(errors="replace")
    assert "liftcam-table3.html" in html and "liftcam-table2.html" in html
