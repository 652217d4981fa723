"""End to end: the demo DAG in a scratch copy of the repo, then what `snakemake -n` plans after edits.

One real run (fig5 alone, then everything: the session's `demo_run`, tests/conftest.py) is shared by every test
here and by tests/test_kill.py; the rest are dry runs. The run uses
config/demo.yaml cut down to two methods in two shards (TEST_DEMO); the demo itself runs every registered method,
whose attribution and metrics rules test_every_method_runs_through_the_attribution_and_metrics_rules runs on
shard 0 of the same run.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow import (PROJECT_FILES, REPO, TEST_DEMO, TEST_METHODS, planned_jobs, planned_outputs,  # noqa: F401
                      snakemake)

pytestmark = pytest.mark.slow


def with_config(workdir: Path, name: str, edit) -> str:
    cfg = yaml.safe_load((workdir / TEST_DEMO).read_text())
    edit(cfg)
    path = workdir / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path.relative_to(workdir))


def test_fig5_target_builds_only_what_fig5_needs(demo_run):
    assert demo_run["fig5_files"] == ["figures/fig5.pdf", "figures/fig5.png", "figures/tables/fig5.csv"]
    assert demo_run["fig5_rescaled"] == []


def test_full_demo_outputs(demo_run):
    work = demo_run["work"]
    for n in range(2, 8):
        for ext in ("pdf", "png"):
            assert (work / "figures" / f"fig{n}.{ext}").stat().st_size > 1000
        assert (work / "figures" / "tables" / f"fig{n}.csv").stat().st_size > 0
    summary = pd.read_parquet(work / "results" / "summary.parquet")
    assert set(summary["method"]) == {"deepliftshap", "gradcampp"}
    assert set(summary["layer"]) == set(range(21))
    plain = summary[summary["rescale_r"].isna()]
    assert set(plain["metric"]) == {"ad", "ic", "deletion_auc", "insertion_auc"}
    assert set(summary[summary["rescale_r"] == 0.3]["metric"]) == {"ad", "ic"}
    # the figure's table holds the summary's numbers, not a copy that drifted
    fig5 = pd.read_csv(work / "figures" / "tables" / "fig5.csv")
    merged = fig5.merge(plain, on=["method", "layer", "metric"], suffixes=("_fig", ""))
    assert len(merged) == len(plain)
    assert (merged["mean_fig"] - merged["mean"]).abs().max() < 1e-9
    # the atlas: every method at every layer for the 2 example crops, its numbers those of the shards
    for ext in ("pdf", "png"):
        assert (work / "figures" / f"atlas.{ext}").stat().st_size > 1000
    atlas = pd.read_csv(work / "figures" / "tables" / "atlas.csv", dtype={"crop_id": str})
    assert len(atlas) == 2 * 2 * 21 and set(atlas["layer"]) == set(range(21))
    shard = np.load(work / "results" / "attributions" / "gradcampp" / "shard-0.npz")
    for row in atlas[atlas["method"] == "gradcampp"].itertuples():
        m = shard[f"map_{row.layer}"][list(shard["crop_id"]).index(row.crop_id)]
        assert m.shape == (row.map_h, row.map_w) and np.isclose(m.sum(dtype=float), row.sum, rtol=1e-9)


def test_touching_nothing_plans_nothing(demo_run):
    assert planned_jobs(snakemake(demo_run["work"], "-n", "--configfile", TEST_DEMO)) == {}


def test_plotting_option_plans_only_that_figure(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "fig3_layers", lambda c: c["figures"].update(fig3_layers=[5, 20]))
    assert planned_jobs(snakemake(work, "-n", "--configfile", cfg)) == {"fig3": 1}


def test_rescale_change_plans_only_rescaled_scoring_and_its_figures(demo_run):
    work = demo_run["work"]

    def edit(c):
        c["rescale"]["r"] = [0.5]
        c["figures"]["rescale_r"] = 0.5

    jobs = planned_jobs(snakemake(work, "-n", "--configfile", with_config(work, "rescale", edit)))
    n_shards = 2 * 2  # 2 methods x 2 shards
    assert jobs == {"metric_rescaled": n_shards, "summary_metric": 1, "paired_difference": 1, "summary": 1,
                    "fig6": 1, "fig7": 1}


def test_adding_a_method_plans_only_its_shards_and_the_summaries(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "method", lambda c: c["attribution"]["methods"].append("gradcam"))
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", cfg))
    # fig7 compares figures.compare's pair only: a new method leaves it (and its paired differences) alone
    assert jobs == {"attribution": 2, "metric": 2, "metric_rescaled": 2, "summary_metric": 2, "summary": 1,
                    "fig5": 1, "fig6": 1, "atlas": 1}


def test_figure_method_options_plan_only_their_figures(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "fig_methods", lambda c: c["figures"].update(methods=["gradcampp"]))
    assert planned_jobs(snakemake(work, "-n", "--configfile", cfg)) == {"fig5": 1, "fig6": 1}
    cfg = with_config(work, "compare", lambda c: c["figures"].update(compare=["deepliftshap", "gradcampp"]))
    assert planned_jobs(snakemake(work, "-n", "--configfile", cfg)) == {"paired_difference": 1, "fig7": 1}
    cfg = with_config(work, "bad_compare", lambda c: c["figures"].update(compare=["gradcampp", "layercam"]))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "config key 'figures.compare' names 'layercam', which is not in 'attribution.methods'" in proc.stderr


def test_cost_target_plans_only_itself(demo_run):
    assert planned_jobs(snakemake(demo_run["work"], "-n", "results/cost.tsv", "--configfile", TEST_DEMO)) \
        == {"cost": 1}


def test_more_images_adds_only_new_shards(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "more", lambda c: c["data"].update(n_images=18))  # 2 shards of 6 -> 3
    proc = snakemake(work, "-n", "--configfile", cfg)
    jobs = planned_jobs(proc)
    assert jobs["attribution"] == 2 and jobs["metric"] == 2 and jobs["metric_rescaled"] == 2
    shards = {p for p in planned_outputs(proc) if p.startswith("results/attributions/")}
    assert shards == {f"results/attributions/{m}/shard-2.npz" for m in ("deepliftshap", "gradcampp")}


def test_n_images_all_counts_the_test_crops_through_the_checkpoint(demo_run):
    """`n_images: all` is resolved from the crops checkpoint once the test crops exist: every shard after the
    demo's two full ones is planned, and the two are kept."""
    work = demo_run["work"]
    n_test = len(pd.read_parquet(work / "results" / "data" / "test.parquet"))
    n_shards = -(-n_test // 6)
    assert n_shards > 2  # the check below plans new shards, not nothing
    proc = snakemake(work, "-n", "--configfile", with_config(work, "all", lambda c: c["data"].update(n_images="all")))
    jobs = planned_jobs(proc)
    assert jobs["attribution"] == jobs["metric"] == jobs["metric_rescaled"] == 2 * (n_shards - 2)
    shards = {p for p in planned_outputs(proc) if p.startswith("results/attributions/")}
    assert shards == {f"results/attributions/{m}/shard-{k}.npz" for m in ("deepliftshap", "gradcampp")
                      for k in range(2, n_shards)}


def _reordered(value):
    """The same config with the keys of every mapping in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_reordered_config_keys_plan_nothing(demo_run):
    """Snakemake compares params by their text: dict params go through config.canonical, so listing the same
    keys in another order is not a change."""
    work = demo_run["work"]
    cfg = yaml.safe_load((work / TEST_DEMO).read_text())
    reordered = work / "config" / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(_reordered(cfg), sort_keys=False))
    assert list(yaml.safe_load(reordered.read_text())["data"]["synthetic"]) == ["seed", "image_size", "n_images"]
    assert planned_jobs(snakemake(work, "-n", "--configfile", "config/reordered.yaml")) == {}


def test_shard_0_holds_the_promised_crops_and_their_maps(demo_run):
    """The attribution rule's shard 0, read back: the crop ids of the first positions of the seeded evaluation
    order, in that order, and the maps attribute_crops gives on those crops (baselines and crops gathered here
    from the split files)."""
    from layersweep.attribution import attribute_crops, read_attribution_shard
    from layersweep.config import shard_range
    from layersweep.data import baseline_crop_ids, eval_order, read_split
    from layersweep.model import load_model

    work = demo_run["work"]
    cfg = yaml.safe_load((work / TEST_DEMO).read_text())
    d, a = cfg["data"], cfg["attribution"]
    data = work / "results" / "data"
    crops, index = read_split(data / "test_crops.npy", data / "test.parquet")
    ids = eval_order(index, cfg["seed"])[slice(*shard_range(0, d["n_images"], d["shard_size"]))]
    assert len(ids) == d["shard_size"]
    pos = {c: i for i, c in enumerate(index["crop_id"])}
    rows = [pos[c] for c in ids]
    splits = {s: read_split(data / f"{s}_crops.npy", data / f"{s}.parquet") for s in ("train", "val")}
    base = []
    for cid in baseline_crop_ids(splits["train"][1], splits["val"][1], a["n_baselines"], cfg["seed"]):
        for c, idx in splits.values():
            hit = np.flatnonzero(idx["crop_id"].to_numpy() == cid)
            base += [c[hit[0]]] if len(hit) else []
    assert len(base) == a["n_baselines"]
    model = load_model(work / "results" / "model" / "head.pt")
    for method in a["methods"]:
        shard = read_attribution_shard(work / "results" / "attributions" / method / "shard-0.npz")
        assert list(shard["crop_id"]) == ids
        np.testing.assert_array_equal(shard["target"], index["label"].to_numpy()[rows])
        out = attribute_crops(model, crops[rows], index["label"].to_numpy()[rows], np.stack(base), [method],
                              list(range(21)), batch_size=a["batch_size"], max_pairs=a["max_pairs"], device="cpu",
                              progress=False)
        assert sorted(shard["maps"]) == list(range(21))
        for layer, m in out["maps"][method].items():
            np.testing.assert_allclose(shard["maps"][layer], m, rtol=1e-4, atol=1e-6 * np.abs(m).max(),
                                       err_msg=f"{method} layer {layer}")


def test_eval_shard_and_select_refuse_what_the_test_split_lacks(demo_run):
    from layersweep import pipeline
    from layersweep.errors import LayersweepError

    data = demo_run["work"] / "results" / "data"
    crops, index = data / "test_crops.npy", data / "test.parquet"
    n_test = len(pd.read_parquet(index))
    ids, sel, labels = pipeline.eval_shard(crops, index, seed=0, start=n_test - 2, stop=n_test)  # the last two fit
    assert len(ids) == len(sel) == len(labels) == 2
    with pytest.raises(LayersweepError, match=f"asks for {n_test + 1} evaluation crops .* only {n_test}"):
        pipeline.eval_shard(crops, index, seed=0, start=n_test - 2, stop=n_test + 1)
    with pytest.raises(LayersweepError, match="crop id 'nosuch_9' .*figures.example_crops"):
        pipeline.crops_by_id(crops, index, [ids[0], "nosuch_9"])


def test_image_mode_reruns_the_test_data_and_what_follows(demo_run):
    """data.samples applies to the test split: its data stage reruns, the train / val crops do not."""
    work = demo_run["work"]
    cfg = with_config(work, "images", lambda c: c["data"].update(samples="images"))
    proc = snakemake(work, "-n", "--configfile", cfg)
    jobs = planned_jobs(proc)
    outputs = " ".join(re.findall(r"output: (.*)", proc.stdout))
    assert jobs["crops"] == 1 and "results/data/test_crops.npy" in outputs
    assert "train_crops" not in outputs and "val_crops" not in outputs
    assert jobs["attribution"] == 4 and jobs["metric"] == 4 and jobs["metric_rescaled"] == 4  # 2 methods x 2 shards
    assert jobs["fig2"] == 1 and jobs["fig3"] == 1 and jobs["fig5"] == 1
    assert jobs["frozen_features"] == 1  # only the test features (the head's test accuracy)


def test_other_arch_reruns_the_model_not_the_data(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "bn", lambda c: c["model"].update(arch="vgg11_bn"))
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", cfg))
    assert "crops" not in jobs and jobs["frozen_features"] == 3 and jobs["train_head"] == 1
    assert jobs["attribution"] == 4 and jobs["fig4"] == 1 and jobs["fig3"] == 1  # the arch's receptive fields


def test_layers_are_checked_against_the_arch(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "layer25", lambda c: c["attribution"].update(layers=[25]))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0 and "'attribution.layers' names layer 25 (outside -1..20" in proc.stderr

    def vgg16_layer25(c):
        c["attribution"].update(layers=[25])
        c["model"].update(arch="vgg16")

    assert planned_jobs(snakemake(work, "-n", "--configfile", with_config(work, "vgg16", vgg16_layer25)))["attribution"] == 4


def test_method_layers_are_checked_before_anything_runs(demo_run):
    """attribution.options.<method>.layers: out of model.arch's range, or a layer kind the method is not defined
    at (FullGrad: conv layers), stops the DAG with one sentence naming the key and the value."""
    work = demo_run["work"]

    def own_layers(method, layers):
        def edit(c):
            c["attribution"]["methods"].append(method)
            c["attribution"]["options"] = {method: {"layers": layers}}
        return with_config(work, f"{method}_layers", edit)

    proc = snakemake(work, "-n", "--configfile", own_layers("scorecam", [20, 25]), check=False)
    assert proc.returncode != 0
    assert ("layersweep: config key 'attribution.options.scorecam.layers' names layer 25 (outside -1..20: the model "
            "has 21 sites; -1 is the model input).") in proc.stderr
    proc = snakemake(work, "-n", "--configfile", own_layers("fullgrad", [3, 4]), check=False)
    assert proc.returncode != 0
    assert ("layersweep: config key 'attribution.options.fullgrad.layers' names layer 4 (features.4, a relu) for "
            "method 'fullgrad', which is defined only at layers of kind conv or batchnorm or input;") in proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr  # stopped before planning anything


def test_bad_config_value_stops_with_one_sentence(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "bad", lambda c: c["metrics"].update(curve_points=1))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "config key 'metrics.curve_points' is invalid" in proc.stderr
    cfg = with_config(work, "unknown_method", lambda c: c["attribution"].update(methods=["nosuchcam"]))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0 and "unknown method 'nosuchcam'" in proc.stderr

    def option(name, value):
        def edit(c):
            c["attribution"]["methods"].append("shapcam_pi")
            c["attribution"]["options"] = {"shapcam_pi": {name: value}}
        return with_config(work, f"option_{name}", edit)

    proc = snakemake(work, "-n", "--configfile", option("samples", 3), check=False)
    assert proc.returncode != 0
    assert "'attribution.options.shapcam_pi.samples' is not an option of method 'shapcam_pi'" in proc.stderr
    proc = snakemake(work, "-n", "--configfile", option("orderings", 0), check=False)
    assert proc.returncode != 0 and "'attribution.options.shapcam_pi.orderings' is invalid" in proc.stderr


def test_real_config_offline_stops_with_one_sentence_and_leaves_nothing(tmp_path):
    """The real config with no network and no local copies: the download says which file and which key."""
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for spec in cfg["data"]["archives"].values():  # a closed loopback port: offline, without waiting on DNS
        spec["mirrors"] = [f"http://127.0.0.1:9/{spec['file']}"]
    (tmp_path / "offline.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "results/data/test.parquet", "--configfile", "offline.yaml", check=False,
                     timeout=300)
    assert proc.returncode != 0
    assert ("layersweep: could not download VOCtest_06-Nov-2007.tar from"
            in proc.stderr), proc.stderr[-3000:]
    assert "set config key 'data.voc_root'" in proc.stderr
    assert not (tmp_path / "resources").exists() or not any(p.is_file() for p in (tmp_path / "resources").rglob("*"))
    assert not (tmp_path / "results").exists()


def test_html_report_has_figures_captions_and_config(demo_run):
    work = demo_run["work"]
    snakemake(work, "--configfile", TEST_DEMO, "--report", "report.html")
    html = (work / "report.html").read_text(errors="replace")
    for n in range(2, 8):
        assert f"fig{n}.png" in html
    assert "Figure 5: Average Drop" in html  # a caption
    assert "curve_points" in html  # the config used
    assert "randomly initialised" in html  # the demo says what it is


# Every registered method through the normal rules, on shard 0 of the demo run (six 64-px crops; data and head
# reused): one layer each (features.18, 4 x 4), two for FullGrad (conv layers; its maps cost no scoring), the
# perturbation methods at a cheap layer with short games. Its 36 jobs are bound by their start-up (~6 s each).
ALL_METHODS_LAYERS = {"fullgrad": [8, 18], "ablationcam": [2], "shapcam_pi": [20], "shapcam": [15, 20],
                      "scorecam": [2]}
ALL_METHODS_OPTIONS = {"shapcam_pi": {"orderings": 1}, "shapcam": {"permutations": 2}}
METRIC_COLUMNS = ["score", "explanation_score", "ad", "ic", "deletion_auc", "insertion_auc"]


def test_every_method_runs_through_the_attribution_and_metrics_rules(demo_run):
    """attribution.methods listing every registered method: each method's attribution and metrics jobs run (two
    at a time, one thread each, as `make demo` runs them), and its metric shard holds its own layers, every
    crop, and finite metrics wherever the map is not constant (and the maps are not all constant, but for
    FullGrad: its terms are |bias x gradient|, and the demo's random VGG has torchvision's zero conv biases)."""
    from layersweep.attribution import available_methods, read_attribution_shard
    from layersweep.model import load_model

    work = demo_run["work"]
    methods = available_methods()
    layers = {m: ALL_METHODS_LAYERS.get(m, [18]) for m in methods if m not in TEST_METHODS}

    def edit(c):
        c["attribution"]["methods"] = methods
        c["attribution"]["options"] = {m: dict(ALL_METHODS_OPTIONS.get(m, {}), layers=ls) for m, ls in layers.items()}

    cfg = with_config(work, "all_methods", edit)
    targets = [f"results/metrics/core/{m}/shard-0.parquet" for m in methods]
    dry = planned_jobs(snakemake(work, "-n", *targets, "--configfile", cfg))
    assert dry == {"attribution": len(layers), "metric": len(layers)}  # data, head and the demo's two: reused
    snakemake(work, *targets, "--configfile", cfg, "--max-threads", "1")
    model = load_model(work / "results" / "model" / "head.pt")
    biases = {l: model.features[l].bias for l in layers["fullgrad"]}
    ids = list(read_attribution_shard(work / "results" / "attributions" / TEST_METHODS[0] / "shard-0.npz")["crop_id"])
    for method in methods:
        expected = layers.get(method, list(range(21)))
        shard = read_attribution_shard(work / "results" / "attributions" / method / "shard-0.npz")
        assert sorted(shard["maps"]) == expected, method
        table = pd.read_parquet(work / "results" / "metrics" / "core" / method / "shard-0.parquet")
        assert sorted(set(table["layer"])) == expected and set(table["method"]) == {method}
        assert len(table) == len(ids) * len(expected) and set(table["crop_id"]) == set(ids), method
        varying = table[~table["constant"]]
        if method == "fullgrad":
            assert all(not b.any() for b in biases.values()) and table["constant"].all()
            assert all(not m.any() for m in shard["maps"].values())
        else:
            assert len(varying) > 0, f"{method}: every map is constant"
        assert np.isfinite(varying[METRIC_COLUMNS].to_numpy()).all(), method
        for row in table.itertuples():  # the flag follows the shard's map: a flat map is flagged, never scored
            m = shard["maps"][row.layer][ids.index(row.crop_id)]
            if m.max() == m.min():
                assert row.constant, (method, row.layer, row.crop_id)
