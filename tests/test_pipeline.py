"""End to end: the demo DAG in a scratch copy of the repo, then what `snakemake -n` plans after edits.

One real run (fig5 alone, then everything) is shared by every test here; the rest are dry runs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROJECT_FILES = ["Snakefile", "config.yaml", "config.schema.yaml", "config", "rules", "scripts", "report", "envs",
                 "profiles"]

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args, check=True, timeout=1500) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run (empty when nothing is to be done)."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) not in ("total", "all"):  # `all` is the default target, not work
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def with_config(workdir: Path, name: str, edit) -> str:
    cfg = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    edit(cfg)
    path = workdir / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path.relative_to(workdir))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    fig5_only = snakemake(work, "figures/fig5.pdf", "--configfile", "config/demo.yaml")  # targets first: --configfile takes many
    built_for_fig5 = sorted(p.relative_to(work).as_posix() for p in (work / "figures").rglob("*") if p.is_file())
    rescaled_for_fig5 = list((work / "results" / "metrics").glob("rescaled-*"))
    snakemake(work, "--configfile", "config/demo.yaml")
    return {"work": work, "fig5_files": built_for_fig5, "fig5_rescaled": rescaled_for_fig5, "fig5_log": fig5_only}


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


def test_touching_nothing_plans_nothing(demo_run):
    assert planned_jobs(snakemake(demo_run["work"], "-n", "--configfile", "config/demo.yaml")) == {}


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
    assert jobs == {"metrics_rescaled": n_shards, "summary_rescaled": 1, "paired_difference": 1, "summary": 1,
                    "fig6": 1, "fig7": 1}


def test_adding_a_method_plans_only_its_shards_and_the_summaries(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "method", lambda c: c["attribution"]["methods"].append("gradcam"))
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", cfg))
    assert jobs == {"attribution": 2, "metrics": 2, "metrics_rescaled": 2, "summary_plain": 1,
                    "summary_rescaled": 1, "paired_difference": 1, "summary": 1, "fig5": 1, "fig6": 1, "fig7": 1}


def test_more_images_adds_only_new_shards(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "more", lambda c: c["data"].update(n_images=18))  # 2 shards of 6 -> 3
    proc = snakemake(work, "-n", "--configfile", cfg)
    jobs = planned_jobs(proc)
    assert jobs["attribution"] == 2 and jobs["metrics"] == 2 and jobs["metrics_rescaled"] == 2
    assert "shard-2.npz" in proc.stdout and "shard-0.npz" not in proc.stdout.split("Job stats")[0]


def test_bad_config_value_stops_with_one_sentence(demo_run):
    work = demo_run["work"]
    cfg = with_config(work, "bad", lambda c: c["metrics"].update(curve_points=1))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "config key 'metrics.curve_points' is invalid" in proc.stderr
    cfg = with_config(work, "unknown_method", lambda c: c["attribution"].update(methods=["nosuchcam"]))
    proc = snakemake(work, "-n", "--configfile", cfg, check=False)
    assert proc.returncode != 0 and "unknown method 'nosuchcam'" in proc.stderr


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
    snakemake(work, "--configfile", "config/demo.yaml", "--report", "report.html")
    html = (work / "report.html").read_text(errors="replace")
    for n in range(2, 8):
        assert f"fig{n}.png" in html
    assert "Figure 5: Average Drop" in html  # a caption
    assert "curve_points" in html  # the config used
    assert "randomly initialised" in html  # the demo says what it is
