"""The papers' tables: spec and numbers checks, the assembly from hand-made summaries, the coefficient cosine
against a naive loop, the renderings, and the study configs (merge, required keys)."""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from layersweep.attribution.shards import write_attribution_shard
from layersweep.errors import LayersweepError
from layersweep.metrics.summary import bootstrap_mean_ci, group_rng
from layersweep.studies import REQUIRED_KEYS, check_synthetic_roots, load_studies, merge, study_config
from layersweep.tables import (coefficient_cosine, cosine_per_image, cosine_summary, load_paper_numbers,
                               load_table_specs, paper_table, table_html, table_markdown)

REPO = Path(__file__).resolve().parents[1]
NUMBERS = REPO / "config" / "paper-numbers.csv"
METHODS_MD = REPO.parent / "shared" / "METHODS.md"
SCHEMA = REPO / "config.schema.yaml"


@pytest.fixture(scope="module")
def studies():
    return load_studies(REPO / "config" / "studies", REPO / "config.yaml", SCHEMA)


@pytest.fixture(scope="module")
def specs(studies):
    return load_table_specs(REPO / "config" / "tables.yaml", studies, load_paper_numbers(NUMBERS))


# ---- the papers' numbers are data, copied exactly from METHODS.md section 5

def _markdown_tables(text: str, heading: str) -> dict[str, list[list[str]]]:
    """{'Table N': rows (header first)} of the markdown tables under a heading of METHODS.md section 5."""
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    out = {}
    for m in re.finditer(r"\*\*(Table \d+)\*\*.*?\n\n((?:\|[^\n]*\|\n)+)", section, flags=re.S):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(2).strip().splitlines()]
        out[m.group(1)] = [rows[0]] + rows[2:]
    return out


@pytest.mark.skipif(not METHODS_MD.exists(), reason="../shared/METHODS.md is absent")
def test_paper_numbers_match_methods_md_exactly():
    numbers = load_paper_numbers(NUMBERS)
    text = METHODS_MD.read_text()
    checked = 0
    shapcam_datasets = {"Table 1": "ILSVRC2012 val", "Table 2": "VOC 2007 val"}
    for paper, heading, tables in (("LIFT-CAM", "### LIFT-CAM", ("Table 1", "Table 2", "Table 3", "Table 4")),
                                   ("Shap-CAM", "### Shap-CAM", ("Table 1", "Table 2", "Table 3"))):
        parsed = _markdown_tables(text, heading)
        for name in tables:
            header, *rows = parsed[name]
            for row in rows:
                for col, cell in zip(header[1:], row[1:]):
                    if paper == "Shap-CAM" and name == "Table 3":  # rows are models, columns methods
                        method, metric, dataset = col, "Proportion", f"ILSVRC2012 val ({row[0]})"
                    elif paper == "Shap-CAM":  # rows are metrics, columns methods
                        method, metric, dataset = col, row[0].replace(" (%)", ""), shapcam_datasets[name]
                    elif name == "Table 2":
                        method, metric, dataset = row[0], "cosine", col
                    elif name == "Table 4":  # ImageNet only: columns are the metrics
                        method, metric, dataset = row[0], col, "ImageNet"
                    else:
                        method, (metric, dataset) = row[0], col.split(" ")
                    hit = numbers[(numbers["paper"] == paper) & (numbers["table"] == name.split()[1])
                                  & (numbers["row"] == method) & (numbers["metric"] == metric)
                                  & (numbers["dataset"] == dataset)]
                    assert len(hit) == 1, (paper, name, method, metric, dataset)
                    assert hit["value"].iloc[0] == float(cell), (paper, name, method, metric, dataset)
                    checked += 1
    # LIFT-CAM Table 5 is one line: "Grad-CAM 47.76 · Grad-CAM++ 49.14 · ..."
    line = text.split("### LIFT-CAM", 1)[1].split("**Table 5**", 1)[1].splitlines()[1]
    for method, cell in re.findall(r"([A-Za-z+-]+) (\d+\.\d+)", line):
        hit = numbers[(numbers["paper"] == "LIFT-CAM") & (numbers["table"] == "5") & (numbers["row"] == method)
                      & (numbers["metric"] == "Proportion") & (numbers["dataset"] == "ImageNet")]
        assert len(hit) == 1 and hit["value"].iloc[0] == float(cell), method
        checked += 1
    assert checked == len(numbers) == 27 + 18 + 54 + 8 + 12 + 6 + 12 + 8


def test_bad_paper_numbers_file_is_one_sentence(tmp_path):
    bad = tmp_path / "numbers.csv"
    bad.write_text(NUMBERS.read_text().replace(",37.4,", ",37.4x,", 1))
    with pytest.raises(LayersweepError, match=r"numbers.csv' has the non-number '37.4x' for LIFT-CAM Table 1, "
                                              r"row 'SHAP-CAM1', IC\.$"):
        load_paper_numbers(bad)
    bad.write_text(NUMBERS.read_text().replace(",37.4,", ",37,4,", 1))
    with pytest.raises(LayersweepError, match=r"numbers.csv' is not a readable CSV"):
        load_paper_numbers(bad)
    with pytest.raises(LayersweepError, match="does not exist"):
        load_paper_numbers(tmp_path / "none.csv")


# ---- specs

def test_table_specs_resolve_layers_and_every_paper_number(specs, studies):
    assert set(specs) == {"liftcam-table1", "liftcam-table2", "liftcam-table3", "liftcam-table4", "liftcam-table5",
                          "shapcam-table1", "shapcam-table2", "shapcam-table3"}
    assert specs["liftcam-table3"]["layers"] == {"liftcam-voc": 29, "liftcam-imagenet": 29}
    assert specs["shapcam-table2"]["layers"] == {"shapcam-voc-torchray": 29, "shapcam-voc-vgg11": 19}
    # LIFT-CAM Table 1's rows are sub-studies with 1, 10, 100 orderings
    for k in (0, 1):  # the VOC studies, then the ImageNet ones
        orderings = [studies[c["studies"][k]]["attribution"]["options"]["shapcam_pi"]["orderings"]
                     for c in specs["liftcam-table1"]["rows"].values()]
        assert orderings == [1, 10, 100]
    ref = specs["liftcam-table2"]["reference"]["study"]
    assert studies[ref]["attribution"]["options"]["shapcam_pi"]["orderings"] == 10000


def test_table_spec_errors_name_the_key(tmp_path, studies):
    numbers = load_paper_numbers(NUMBERS)
    base = yaml.safe_load((REPO / "config" / "tables.yaml").read_text())

    def check(edit, pattern):
        spec = yaml.safe_load(yaml.safe_dump(base, sort_keys=False))
        edit(spec)
        path = tmp_path / "tables.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        with pytest.raises(LayersweepError, match=pattern):
            load_table_specs(path, studies, numbers)

    check(lambda s: s["liftcam-table3"]["layers"].update({"liftcam-voc": 28}),
          r"'liftcam-table3.layers.liftcam-voc' is layer 28, which study 'liftcam-voc' does not compute")
    check(lambda s: s["liftcam-table3"]["layers"].update({"nowhere": 29}), r"names the study 'nowhere'")
    check(lambda s: s["liftcam-table3"]["rows"].update({"Mask": {"method": "gradcam", "studies": ["liftcam-voc"]}}),
          r"no number for LIFT-CAM Table 3, row 'Mask', column 'IC'")
    check(lambda s: s["liftcam-table1"].pop("metrics"), r"'liftcam-table1' lacks 'metrics'")
    check(lambda s: s["liftcam-table2"].pop("reference"), r"'liftcam-table2.reference' must name")


# ---- assembly from hand-made summaries

def _summary(study, method, layer, metric, mean, n=10):
    return {"study": study, "method": method, "layer": layer, "metric": metric, "rescale_r": np.nan, "mean": mean,
            "ci_low": mean - 1, "ci_high": mean + 1, "n": n, "n_constant": 0, "n_clamped": 0}


def test_paper_table_fills_cells_and_notes_what_is_missing(specs):
    numbers = load_paper_numbers(NUMBERS)
    spec = specs["liftcam-table3"]
    ours = pd.DataFrame([_summary("liftcam-voc", "gradcam", 29, "ic", 33.3),
                         _summary("liftcam-voc", "gradcam", 29, "ad", 31.0),
                         _summary("liftcam-voc", "gradcam", 18, "ad", 99.0),        # another layer: ignored
                         {**_summary("liftcam-voc", "gradcam", 29, "ad", 5.0), "rescale_r": 0.3},  # rescaled: ignored
                         _summary("liftcam-voc", "liftcam", 29, "ic", np.nan, n=0)])
    facts = {"liftcam-voc": {"model": "vgg16 (torchray_voc)", "methods": ["gradcam", "liftcam", "scorecam"],
                             "metrics": ["ad", "ic", "deletion_auc", "insertion_auc"]},
             "liftcam-imagenet": {"model": "vgg16 (torchvision_imagenet)", "methods": ["gradcam"],
                                  "metrics": ["ad", "ic"]}}
    table = paper_table("liftcam-table3", spec, numbers, ours, facts)
    assert len(table) == 6 * 3 * 2  # a line per paper row and study (VOC, then ImageNet)
    imagenet = table[table["study"] == "liftcam-imagenet"].set_index(["paper_row", "column"])
    assert imagenet.loc[("Grad-CAM", "IC"), "paper"] == 24.0  # the paper's ImageNet column
    assert imagenet.loc[("Grad-CAM", "IC"), "citation"].endswith("Table 3, IC (ImageNet)")
    assert "no value for gradcam at layer 29 in study 'liftcam-imagenet'" in imagenet.loc[("Grad-CAM", "IC"), "note"]
    cell = table[table["study"] == "liftcam-voc"].set_index(["paper_row", "column"])
    assert cell.loc[("Grad-CAM", "IC"), "paper"] == 32.7 and cell.loc[("Grad-CAM", "IC"), "ours"] == 33.3
    assert cell.loc[("Grad-CAM", "AD"), "ours"] == 31.0 and cell.loc[("Grad-CAM", "AD"), "ci_high"] == 32.0
    assert cell.loc[("Grad-CAM", "AD"), "layer"] == 29 and cell.loc[("Grad-CAM", "AD"), "n"] == 10
    assert "does not compute the metric 'add'" in cell.loc[("Grad-CAM", "ADD"), "note"]
    assert math.isnan(cell.loc[("Grad-CAM", "ADD"), "ours"]) and cell.loc[("Grad-CAM", "ADD"), "paper"] == 17.43
    assert "does not run xgradcam" in cell.loc[("XGrad-CAM", "IC"), "note"]
    assert "no value for scorecam at layer 29" in cell.loc[("Score-CAM", "IC"), "note"]
    assert "every map was constant" in cell.loc[("LIFT-CAM", "IC"), "note"]
    assert cell.loc[("Grad-CAM", "IC"), "citation"].endswith("Table 3, IC (VOC)")
    md = table_markdown(spec["title"], table)
    assert "| Grad-CAM | gradcam | liftcam-voc | vgg16 (torchray_voc) | features.29 | 32.70 | 33.30 [32.30, 34.30] (10)" in md
    assert "[1] study 'liftcam-voc' does not compute the metric 'add'" in md
    page = table_html(spec["title"], table, {"liftcam-voc": {"model": {"arch": "vgg16", "layers": [29, 30]}}},
                      {"liftcam-voc": "# the set-up\nmodel: {arch: vgg16}\n"})
    assert "<pre># the set-up\nmodel: {arch: vgg16}\n</pre>" in page  # the study file as written
    assert "<pre>model:\n  arch: vgg16\n  layers: [29, 30]\n</pre>" in page  # the full config, block YAML
    assert "&lt;" not in page.split("<table>")[0] and "<td>Grad-CAM</td>" in page


def test_shapcam_table_is_built_once_per_model(specs):
    numbers = load_paper_numbers(NUMBERS)
    spec = specs["shapcam-table2"]
    facts = {s: {"model": m, "methods": ["gradcam", "gradcampp", "scorecam", "shapcam"], "metrics": ["ad", "ic"]}
             for s, m in (("shapcam-voc-torchray", "vgg16 (torchray_voc)"), ("shapcam-voc-vgg11", "vgg11 (torchvision)"))}
    ours = pd.DataFrame([_summary("shapcam-voc-torchray", "shapcam", 29, "ad", 14.0),
                         _summary("shapcam-voc-vgg11", "shapcam", 19, "ad", 20.0)])
    table = paper_table("shapcam-table2", spec, numbers, ours, facts)
    assert len(table) == 4 * 2 * 2
    shap = table[(table["paper_row"] == "ShapCAM") & (table["column"] == "Average Drop")].set_index("study")
    assert shap.loc["shapcam-voc-torchray", "ours"] == 14.0 and shap.loc["shapcam-voc-vgg11", "ours"] == 20.0
    assert (shap["paper"] == 13.2).all() and shap.loc["shapcam-voc-vgg11", "layer"] == 19


# ---- the coefficient cosine

def test_coefficient_cosine_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    w, r = rng.normal(size=(7, 13)), rng.normal(size=(7, 13))
    w[2] = 0.0           # a zero norm: NaN
    r[5] = 0.0
    w[4] = -3.5 * r[4]   # opposite directions: -1
    got = coefficient_cosine(w.astype(np.float32), r.astype(np.float32))
    for i in range(7):
        a, b = [float(v) for v in w[i]], [float(v) for v in r[i]]
        dot = sum(x * y for x, y in zip(a, b))
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
        if na == 0 or nb == 0:
            assert math.isnan(got[i])
        else:
            assert got[i] == pytest.approx(dot / (na * nb), abs=1e-6)
    assert got[4] == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(LayersweepError, match="cannot be compared"):
        coefficient_cosine(w, r[:, :5])


def _shard(path, method, crop_ids, targets, weights, layer=29):
    n = len(crop_ids)
    write_attribution_shard(path, method, crop_ids, targets, np.zeros(n), np.zeros(n),
                            {layer: np.ones((n, 2, 3))}, weights_by_layer={layer: weights})


def test_cosine_per_image_joins_shards_by_crop_id_and_summarises(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}_c{i % 20:02d}" for i in range(9)]
    targets = [i % 20 for i in range(9)]
    w, ref = rng.normal(size=(9, 6)), rng.normal(size=(9, 6))
    ref[1] = 0.0
    # the method's shards cut across the reference's, and the reference holds only a prefix (7 samples)
    _shard(tmp_path / "m0.npz", "gradcam", ids[:4], targets[:4], w[:4])
    _shard(tmp_path / "m1.npz", "gradcam", ids[4:], targets[4:], w[4:])
    _shard(tmp_path / "r0.npz", "shapcam_pi", ids[:5], targets[:5], ref[:5])
    _shard(tmp_path / "r1.npz", "shapcam_pi", ids[5:7], targets[5:7], ref[5:7])
    per = cosine_per_image("gradcam", [tmp_path / "m0.npz", tmp_path / "m1.npz"],
                           [tmp_path / "r0.npz", tmp_path / "r1.npz"], 29)
    assert list(per["crop_id"]) == ids[:7]
    for _, row in per.iterrows():
        i = ids.index(row["crop_id"])
        if i == 1:
            assert math.isnan(row["cosine"])
        else:
            naive = sum(a * b for a, b in zip(w[i], ref[i])) / (np.sqrt(sum(w[i] ** 2)) * np.sqrt(sum(ref[i] ** 2)))
            assert row["cosine"] == pytest.approx(naive, abs=1e-6)
    summary = cosine_summary(per, n_boot=200, ci=0.95, seed=4)
    (row,) = summary.to_dict("records")
    finite = per["cosine"].dropna().to_numpy()
    assert row["n"] == 6 and row["n_constant"] == 1 and row["mean"] == pytest.approx(finite.mean())
    mean, lo, hi = bootstrap_mean_ci(finite, n_boot=200, ci=0.95, rng=group_rng(4, "gradcam", 29, float("nan")))
    assert (row["ci_low"], row["ci_high"]) == (lo, hi) and lo < row["mean"] < hi

    _shard(tmp_path / "other.npz", "shapcam_pi", ids[:2], [5, 6], ref[:2])
    with pytest.raises(LayersweepError, match="explained for class 0 by gradcam but for class 5"):
        cosine_per_image("gradcam", [tmp_path / "m0.npz"], [tmp_path / "other.npz"], 29)
    with pytest.raises(LayersweepError, match="holds no channel weights of layer 18"):
        cosine_per_image("gradcam", [tmp_path / "m0.npz"], [tmp_path / "r0.npz"], 18)


# ---- study configs

def test_study_config_is_config_yaml_with_the_study_keys_on_top(studies):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    own = yaml.safe_load((REPO / "config" / "studies" / "liftcam-voc.yaml").read_text())
    cfg = studies["liftcam-voc"]
    assert cfg["model"]["source"] == "torchray_voc" and cfg["model"]["arch"] == "vgg16"
    assert cfg["model"]["checkpoints"] == base["model"]["checkpoints"]  # not stated: config.yaml's
    assert cfg["attribution"]["methods"] == own["attribution"]["methods"]  # lists replace
    assert cfg["attribution"]["options"]["shapcam"] == base["attribution"]["options"]["shapcam"]  # dicts merge
    assert cfg["figures"]["compare"] == own["attribution"]["methods"][:2]
    assert studies["liftcam-voc-pi1"]["figures"]["compare"] is None  # one method: no fig7
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_study_config_missing_a_key_is_one_sentence(tmp_path, key):
    own = yaml.safe_load((REPO / "config" / "studies" / "liftcam-voc.yaml").read_text())
    section, name = key.split(".")
    del own[section][name]
    path = tmp_path / "my-study.yaml"
    path.write_text(yaml.safe_dump(own))
    with pytest.raises(LayersweepError) as err:
        study_config(path, REPO / "config.yaml", SCHEMA)
    msg = str(err.value)
    assert msg == (f"the study config '{path}' lacks the key '{key}'; a study states its model, data and methods "
                   f"itself ({', '.join(REQUIRED_KEYS)}).")


def test_study_config_bad_value_or_name_is_one_sentence(tmp_path):
    own = yaml.safe_load((REPO / "config" / "studies" / "liftcam-voc.yaml").read_text())
    own["model"]["arch"] = "vgg17"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(own))
    with pytest.raises(LayersweepError, match=r"the study config '.*bad.yaml': config key 'model.arch' is invalid"):
        study_config(path, REPO / "config.yaml", SCHEMA)
    (tmp_path / "Bad_Name.yaml").write_text(yaml.safe_dump(own))
    with pytest.raises(LayersweepError, match="has a name that is not lower-case"):
        study_config(tmp_path / "Bad_Name.yaml", REPO / "config.yaml", SCHEMA)


def test_a_synthetic_study_needs_a_voc_root_of_its_own(studies):
    synthetic = {"n_images": 16, "image_size": 96, "seed": 0}
    mine = merge(studies["liftcam-voc"], {"data": {"synthetic": synthetic, "voc_root": "resources/VOCsynthetic-a"}})
    check_synthetic_roots({"a": mine, "b": studies["liftcam-voc-pi1"]}, "resources/VOCsynthetic")  # fine
    with pytest.raises(LayersweepError, match=r"'config/studies/b.yaml' writes its synthetic VOC to data.voc_root "
                                              r"'resources/VOCsynthetic-a', as study 'a' does"):
        check_synthetic_roots({"a": mine, "b": mine}, "resources/VOCsynthetic")
    with pytest.raises(LayersweepError, match="as the report study does"):
        check_synthetic_roots({"a": mine}, "resources/VOCsynthetic-a/")


def test_imagenet_tables_read_their_datasets_columns_and_keep_pending_setups_empty(specs):
    numbers = load_paper_numbers(NUMBERS)
    from layersweep.attribution.sites import arch_site_table

    spec = specs["shapcam-table3"]
    # ResNet-18's layer4 (a stage's module path) is the site of its last block's output
    assert spec["layers"] == {"shapcam-imagenet-pointing-vgg16": 29,
                              "shapcam-imagenet-pointing-resnet18": arch_site_table("resnet18").aliases["layer4"]}
    # the pending mechanism (a set-up that cannot run yet keeps its cells NaN with a note), tried on the ResNet-18 row
    spec = copy.deepcopy(spec)
    spec["layers"].pop("shapcam-imagenet-pointing-resnet18")
    spec["pending"] = {"shapcam-imagenet-pointing-resnet18": {"model": "resnet18 (torchvision_imagenet)",
                                                               "note": "ResNet-18 waits for the graph engine"}}
    facts = {"shapcam-imagenet-pointing-vgg16": {"model": "vgg16 (torchvision_imagenet)",
                                                 "methods": ["gradcam", "gradcampp", "scorecam", "shapcam"],
                                                 "metrics": ["pointing_game", "pointing_chance", "ad", "ic"]}}
    ours = pd.DataFrame([{**_summary("shapcam-imagenet-pointing-vgg16", "gradcam", 29, "pointing_game", 41.0),
                          "n_no_value": 0},
                         {**_summary("shapcam-imagenet-pointing-vgg16", "shapcam", 29, "pointing_game", 42.0, n=7),
                          "n_no_value": 3}])
    table = paper_table("shapcam-table3", spec, numbers, ours, facts).set_index(["paper_row", "study"])
    assert len(table) == 4 * 2
    vgg, resnet = "shapcam-imagenet-pointing-vgg16", "shapcam-imagenet-pointing-resnet18"
    assert table.loc[("GradCAM", vgg), "paper"] == 39.95 and table.loc[("GradCAM", resnet), "paper"] == 40.90
    assert table.loc[("GradCAM", vgg), "ours"] == 41.0 and table.loc[("GradCAM", vgg), "note"] == ""
    assert "3 samples left out" in table.loc[("ShapCAM", vgg), "note"] and table.loc[("ShapCAM", vgg), "n"] == 7
    pending = table.loc[("ShapCAM", resnet)]
    assert math.isnan(pending["ours"]) and "waits for the graph engine" in pending["note"]
    assert pending["model"] == "resnet18 (torchvision_imagenet)" and pending["layer"] == -1
    assert pending["citation"].endswith("Table 3, Proportion (ILSVRC2012 val (ResNet18))")
    md = table_markdown(spec["title"], table.reset_index())
    assert "| ShapCAM | shapcam | shapcam-imagenet-pointing-resnet18 | resnet18 (torchvision_imagenet) | n/a | 41.28 | n/a [" in md
    # Shap-CAM Table 1's Mask and RISE rows: methods this project does not have, NaN with a note
    t1 = paper_table("shapcam-table1", specs["shapcam-table1"], numbers, pd.DataFrame([_summary("x", "m", 0, "ad", 1.0)]),
                     {"shapcam-imagenet": {"model": "vgg16 (torchvision_imagenet)", "methods": ["gradcam"],
                                           "metrics": ["ad", "ic"]}}).set_index(["paper_row", "column"])
    assert t1.loc[("Mask", "Average Drop"), "paper"] == 63.5 and "does not run mask" in t1.loc[("Mask", "Average Drop"), "note"]


def test_imagenet_spec_keys_are_checked(tmp_path, studies):
    numbers = load_paper_numbers(NUMBERS)
    base = yaml.safe_load((REPO / "config" / "tables.yaml").read_text())
    for edit, pattern in (
            (lambda s: s["shapcam-table3"].update({"pending": {"shapcam-imagenet-pointing-resnet18": {"model": "m"}}}),
             r"key 'shapcam-table3.pending.shapcam-imagenet-pointing-resnet18' needs a 'model' and a 'note'"),
            (lambda s: s["liftcam-table3"]["datasets"].update({"nowhere": "ImageNet"}),
             r"key 'liftcam-table3.datasets' names the study 'nowhere'"),
            (lambda s: s["liftcam-table3"]["datasets"].update({"liftcam-imagenet": "COCO 2017"}),
             r"no number for LIFT-CAM Table 3, row 'Grad-CAM', column 'IC' \(COCO 2017\)")):
        spec = yaml.safe_load(yaml.safe_dump(base, sort_keys=False))
        edit(spec)
        path = tmp_path / "tables.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        with pytest.raises(LayersweepError, match=pattern):
            load_table_specs(path, studies, numbers)
