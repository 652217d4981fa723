"""Helpers of the end-to-end tests: Snakemake in a scratch copy of the project, what its dry runs plan, and the
two real runs the suite shares (tests/conftest.py: `demo_run`, `demo_study`, one of each per pytest invocation).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROJECT_FILES = ["Snakefile", "config.yaml", "config.schema.yaml", "config", "rules", "scripts", "report", "envs",
                 "profiles"]

TEST_DEMO = "config/test-demo.yaml"  # written by run_demo: config/demo.yaml with TEST_METHODS only
TEST_METHODS = ["deepliftshap", "gradcampp"]


def snakemake_env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def snakemake(workdir: Path, *args, check=True, timeout=1500) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=snakemake_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a run or dry run (empty when nothing is to be done)."""
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


def planned_outputs(proc: subprocess.CompletedProcess) -> set[str]:
    """Every output file of the jobs a dry run plans (its job list follows the first 'Job stats' table)."""
    outs = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith("output: "):
            outs.update(p.strip() for p in line[len("output: "):].split(","))
    return outs


def copy_project(dest: Path) -> Path:
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


def write_test_demo_config(workdir: Path) -> str:
    """config/demo.yaml with TEST_METHODS only (and their options) in two shards of six crops: the DAG the tests
    run and edit. The demo itself runs every registered method in one shard."""
    cfg = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    attribution = cfg["attribution"]
    attribution["methods"] = list(TEST_METHODS)
    attribution["options"] = {m: o for m, o in attribution.get("options", {}).items() if m in TEST_METHODS}
    cfg["data"].update(n_images=12, shard_size=6)
    (workdir / TEST_DEMO).write_text(yaml.safe_dump(cfg, sort_keys=False))  # demo.yaml's key order
    return TEST_DEMO


def run_demo(work: Path) -> dict:
    """The demo DAG of TEST_DEMO in a scratch copy: fig5 alone first (what it builds is kept), then everything."""
    copy_project(work)
    write_test_demo_config(work)
    fig5_only = snakemake(work, "figures/fig5.pdf", "--configfile", TEST_DEMO)  # targets first: --configfile takes many
    built_for_fig5 = sorted(p.relative_to(work).as_posix() for p in (work / "figures").rglob("*") if p.is_file())
    rescaled_for_fig5 = list((work / "results" / "metrics").glob("*/rescaled-*"))
    snakemake(work, "--configfile", TEST_DEMO)
    return {"work": work, "fig5_files": built_for_fig5, "fig5_rescaled": rescaled_for_fig5, "fig5_log": fig5_only}


# ---- one paper study end to end, offline: LIFT-CAM's VOC set-up on synthetic data, TorchRay-layout random weights

N_DEMO = 3  # samples of the demo study; its reference (liftcam-voc-pi10000) holds the first N_DEMO - 1
DEMO_METHODS = ["gradcam", "ablationcam", "liftcam"]  # a gradient, a perturbation and a DeepLift CAM: the other
                                                      # rows of the paper's tables say the study does not run them
POINTING_GAME = "studies/liftcam-voc/results/summary/pointing_game/plain.parquet"
STUDY_TABLES = ("tables/liftcam-table3.csv", "tables/liftcam-table2.csv")
HIDDEN = 4096  # TorchRay's real classifier width: the loader builds torchvision's VGG16 around the file


def torchray_layout_state(seed: int = 0) -> dict:
    """A VGG16 state dict in the layout of TorchRay's vgg16_voc-b050e8c3.pth.tar (features.{i} reading BGR,
    classifier.{0,2,4}, classifier.0 as (out, 512, 7, 7)), He-scaled random weights, non-zero biases."""
    import numpy as np
    import torch
    from torchvision.models.vgg import cfgs

    g = torch.Generator().manual_seed(seed)
    state, i, c_in = {}, 0, 3
    for v in cfgs["D"]:
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = torch.randn(v, c_in, 3, 3, generator=g) * (2.0 / (9 * c_in)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(v, generator=g) * 0.05
        i, c_in = i + 2, v
    for key, shape in (("0", (HIDDEN, 512, 7, 7)), ("2", (HIDDEN, HIDDEN)), ("4", (20, HIDDEN))):
        state[f"classifier.{key}.weight"] = torch.randn(*shape, generator=g) * (2.0 / np.prod(shape[1:])) ** 0.5
        state[f"classifier.{key}.bias"] = torch.randn(shape[0], generator=g) * 0.05
    return state


def demo_study_keys(name: str, n_images: int) -> dict:
    """What makes a study offline and small: synthetic VOC (its own directory: each study's synthetic_voc rule
    writes one, same seed, so the same samples), the state dict above, 48 px, one shard."""
    return {
        "demo": True, "device": "cpu",
        "data": {"voc_root": f"resources/VOCsynthetic-{name}", "synthetic": {"n_images": 16, "image_size": 96, "seed": 0},
                 "crop_size": 48, "n_images": n_images, "shard_size": 4},
        "model": {"weights": "resources/torchray-layout-vgg16.pth.tar"},
        "attribution": {"batch_size": 4, "n_baselines": 2, "max_pairs": 8, "perturb_batch": 128,
                        **({"methods": DEMO_METHODS} if name == "liftcam-voc" else {})},
        "metrics": {"curve_points": 11, "batch_size": 64},
        "summary": {"n_boot": 200},
    }


def edit_study(work: Path, name: str, edit) -> None:
    path = work / "config" / "studies" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(edit(yaml.safe_load(path.read_text())), sort_keys=False))


def run_demo_study(work: Path) -> dict:
    """LIFT-CAM's Tables 2 and 3 and the pointing game of liftcam-voc, built in a scratch copy."""
    import torch
    from layersweep.studies import merge

    copy_project(work)
    (work / "resources").mkdir()
    torch.save(torchray_layout_state(), work / "resources" / "torchray-layout-vgg16.pth.tar")
    # Table 3's ImageNet lines need ImageNet: this demo is the VOC set-up alone (tests/test_imagenet_tables.py
    # builds an ImageNet table on a fake ILSVRC2012 copy)
    tables = yaml.safe_load((work / "config" / "tables.yaml").read_text())
    table3 = tables["liftcam-table3"]
    table3["layers"].pop("liftcam-imagenet")
    table3.pop("datasets")
    for cell in table3["rows"].values():
        cell["studies"] = ["liftcam-voc"]
    (work / "config" / "tables.yaml").write_text(yaml.safe_dump(tables, sort_keys=False))
    edit_study(work, "liftcam-voc", lambda c: merge(c, demo_study_keys("liftcam-voc", N_DEMO)))
    edit_study(work, "liftcam-voc-pi10000", lambda c: merge(
        merge(c, demo_study_keys("liftcam-voc-pi10000", N_DEMO - 1)),
        {"attribution": {"options": {"shapcam_pi": {"orderings": 3}}}}))
    start = time.perf_counter()
    proc = snakemake(work, *STUDY_TABLES, POINTING_GAME, timeout=1200)
    seconds = time.perf_counter() - start
    print(f"demo study (LIFT-CAM VOC, Tables 2 and 3): {seconds:.0f} s")
    return {"work": work, "seconds": seconds, "log": proc}
