"""Parsing the workflow: the torch-side facts are computed once and then read without importing torch, and
the studies' modules are loaded only for a command that asks for something of them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layersweep.dagfacts import compute_facts, facts_key, workflow_facts
from layersweep.errors import LayersweepError
from layersweep.studies import studies_requested

REPO = Path(__file__).resolve().parents[1]
STUDIES = ["liftcam-voc", "shapcam-voc-vgg11"]


def demo_config(**edits) -> dict:
    """config/demo.yaml over config.yaml with the schema's defaults filled, as the Snakefile sees it."""
    from snakemake.utils import validate

    from layersweep.studies import merge

    cfg = merge(yaml.safe_load((REPO / "config.yaml").read_text()),
                yaml.safe_load((REPO / "config" / "demo.yaml").read_text()))
    for key, value in edits.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    validate(cfg, str(REPO / "config.schema.yaml"))
    return cfg


def test_cached_facts_equal_a_fresh_computation_and_are_read_without_torch(tmp_path):
    cfg = demo_config(attribution={"methods": ["deepliftshap", "gradcampp", "scorecam"]})
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(cfg))
    # a fresh interpreter: imports nothing heavy and, on a cache hit, must not import torch
    script = (
        "import json, pickle, sys\n"
        "from layersweep.dagfacts import workflow_facts\n"
        f"facts = workflow_facts(json.load(open({str(config_file)!r})), cache_dir={str(tmp_path / 'cache')!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'methods': facts.methods}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))

    def run():
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first == {"torch": True, "methods": ["deepliftshap", "gradcampp", "scorecam"]}  # computed
    assert second == {"torch": False, "methods": first["methods"]}  # read back
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 1
    cached = workflow_facts(json.loads(config_file.read_text()), cache_dir=tmp_path / "cache")
    assert cached == compute_facts(json.loads(config_file.read_text()))


def test_the_facts_are_what_the_registries_and_the_cost_model_say():
    from layersweep.sizing import attribution_memory_mb, attribution_runtime_min
    from layersweep.metrics.registry import get_metric

    cfg = demo_config(metrics={"compute": ["core", "add"]}, device="auto")
    facts = compute_facts(cfg, environ={"LAYERSWEEP_CUDA": "1"})
    assert facts.methods == cfg["attribution"]["methods"] and facts.compute == ["core", "add"]
    assert facts.metrics["add"].columns == get_metric("add").columns
    assert facts.metrics["core"].rescaled == tuple(get_metric("core").rescaled)
    assert facts.gpu == 1 and compute_facts(cfg, environ={"LAYERSWEEP_CUDA": "0"}).gpu == 0
    assert facts.attribution_mem_mb["scorecam"] == attribution_memory_mb("scorecam", cfg)
    assert facts.attribution_runtime_min["shapcam"] == attribution_runtime_min("shapcam", cfg, 12)
    assert facts.head_training and facts.checkpoint_key == "vgg11"


def test_the_key_changes_with_the_config_and_the_cuda_environment():
    cfg = demo_config()
    key = facts_key(cfg, environ={})
    assert facts_key(cfg, environ={}) == key
    assert facts_key(demo_config(data={"n_images": 13}), environ={}) != key
    assert facts_key(cfg, environ={"LAYERSWEEP_CUDA": "1"}) != key
    assert facts_key(cfg, environ={"CUDA_VISIBLE_DEVICES": "1"}) != key


def test_a_refused_config_is_one_sentence_and_is_not_cached(tmp_path):
    cfg = demo_config(attribution={"methods": ["deepliftshap", "nosuchcam"]})
    with pytest.raises(LayersweepError, match="names the unknown method 'nosuchcam'"):
        workflow_facts(cfg, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, wanted", [
    ([], False),
    (["-n", "--cores", "2"], False),
    (["figures/fig5.pdf", "--configfile", "config/demo.yaml", "config/studies/liftcam-voc.yaml"], False),
    (["results/cost.tsv", "--config", "device=cpu"], False),
    (["tables"], True),
    (["--report", "report.html", "all", "tables"], True),
    (["tables/liftcam-table3.csv"], True),
    (["./studies/liftcam-voc/figures/fig5.pdf"], True),
    (["--target-jobs", "liftcam_voc_attribution:k=0,method=gradcam"], True),
    (["--target-jobs", "paper_table:table=liftcam-table3"], True),
    (["--target-jobs", "attribution:k=0,method=gradcam"], False),  # the report study's own rule
])
def test_studies_are_loaded_only_for_their_targets(argv, wanted):
    assert studies_requested(argv, STUDIES, environ={}) is wanted


def test_studies_can_be_loaded_for_any_command():
    assert studies_requested([], STUDIES, environ={"LAYERSWEEP_STUDIES": "1"})
