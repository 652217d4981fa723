"""What each job of the demo DAG asks of SLURM under profiles/slurm, read from Snakemake's dry run.

A dry run needs no cluster: it resolves every job's threads (sbatch --cpus-per-task), mem_mb
(--mem), runtime (-t) and gpu (--gpus) exactly as a submission would. Two dry runs of the same
DAG in an empty directory, both with `device: auto` (the study's default; the demo's is cpu): try 1 on a
machine with CUDA (faked with LAYERSWEEP_CUDA=1, `layersweep.device.cuda_for_jobs`), try 2 on one without
(LAYERSWEEP_CUDA=0) and with --max-threads 2, which plans what `device: cpu` plans on the GPU-less 2-CPU test
cluster of tests/slurm/run_slurm_test.sh. Try 2 is
`--attempt 2`, the flag Snakemake itself hands a resubmitted job (its help calls it internal),
so its resources are those of the first retry.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# Rules that use the device: they ask SLURM for a GPU unless device is cpu, or auto where CUDA is absent.
GPU_RULES = {"attribution", "metric", "metric_rescaled"}
# A job block: "rule NAME:" (indented inside a group job's block), then its fields one level deeper.
JOB_HEADER = re.compile(r"^(\s*)(?:local)?(?:rule|checkpoint) (\w+):$")


def localrules():
    """Rule names on the Snakefile's `localrules:` line (they run on the submit host)."""
    text = (REPO / "Snakefile").read_text()
    match = re.search(r"^localrules:(.*)$", text, flags=re.M)
    return {name.strip() for name in match.group(1).split(",")} if match else set()


def parse_jobs(text):
    """The dry run's job blocks -> [{rule, wildcards, threads, resources}] (group members included)."""
    jobs, job, indent = [], None, ""
    for line in text.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            indent = header.group(1) + "    "
            job = {"rule": header.group(2), "threads": 1, "wildcards": "", "resources": {}}
            jobs.append(job)
            continue
        if job is None or not line.startswith(indent) or line[len(indent):len(indent) + 1] == " ":
            job = None  # the block ended
            continue
        key, _, value = line.strip().partition(": ")
        if key == "threads":
            job["threads"] = int(value)
        elif key == "wildcards":
            job["wildcards"] = value
        elif key == "resources":
            for item in value.split(", "):
                name, _, val = item.partition("=")
                job["resources"][name] = int(val) if re.fullmatch(r"-?\d+", val) else val
    return jobs


def dry_run(workdir, *extra, cuda: bool):
    # --cores 1024: in a dry run Snakemake caps the shown threads at --cores (1 if unset);
    # a SLURM submission has no such cap, so a large value shows the threads actually requested.
    cmd = [str(SNAKEMAKE), "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(REPO / "profiles" / "slurm"),
           "--configfile", str(REPO / "config" / "demo.yaml"), "--cores", "1024", *extra]
    env = dict(os.environ, LAYERSWEEP_CUDA=str(int(cuda)))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=workdir, env=env)
    assert proc.returncode == 0, f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    jobs = parse_jobs(proc.stdout + "\n" + proc.stderr)
    assert jobs, f"no job found in the dry run output:\n{proc.stdout[-3000:]}"
    return jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    first = dry_run(tmp_path_factory.mktemp("try1"), "--config", "device=auto", cuda=True)  # the demo says cpu
    second = dry_run(tmp_path_factory.mktemp("try2"), "--attempt", "2", "--config", "device=auto",
                     "--max-threads", "2", cuda=False)
    return first, second


def key(job):
    return job["rule"], job["wildcards"]


def submitted(jobs):
    """The jobs that go through sbatch: all but the localrules."""
    local = localrules()
    return [j for j in jobs if j["rule"] not in local]


def test_downloads_are_localrules_and_heavy_rules_are_not():
    # compute nodes often have no network: only the submit host may download
    rule_names = set()
    for smk in (REPO / "rules").glob("*.smk"):
        rule_names |= set(re.findall(r"^(?:rule|checkpoint) (\w+):", smk.read_text(), flags=re.M))
    downloads = {r for r in rule_names if r.startswith("download")}
    assert downloads, "no download rule found in rules/*.smk"
    assert downloads <= localrules()
    assert not (GPU_RULES | {"frozen_features", "train_head"}) & localrules()


def test_every_submitted_job_requests_memory_and_wall_time(runs):
    first, _ = runs
    assert GPU_RULES <= {j["rule"] for j in submitted(first)}
    for jobs in runs:
        for job in submitted(jobs):
            res = job["resources"]
            assert isinstance(res.get("mem_mb"), int) and res["mem_mb"] > 0, job
            assert isinstance(res.get("runtime"), int) and res["runtime"] > 0, job
            assert job["threads"] >= 1, job


def test_mem_and_runtime_grow_with_each_retry(runs):
    """retries: 2 only helps an out-of-memory or timed-out job if the retry asks for more."""
    first, second = runs
    again = {key(j): j for j in second}
    assert set(again) == {key(j) for j in first}
    flat = []
    for job in submitted(first):
        retry = again[key(job)]
        for name in ("mem_mb", "runtime"):
            one, two = job["resources"][name], retry["resources"][name]
            # twice the first request, up to int() rounding of a fractional per-try value
            if abs(two - 2 * one) > 2:
                flat.append(f"{job['rule']}[{job['wildcards']}] {name}: {one} -> {two}")
    assert not flat, "not scaled by attempt: " + "; ".join(sorted(set(flat)))


class _Resources(dict):
    """A job's resources as the SLURM plugin reads them (`resources.get("gpu")`, `resources.gres`)."""

    def __getattr__(self, name):
        return self.get(name)


def sbatch_gpu_args(job) -> str:
    """The GPU arguments the SLURM plugin would add to this job's sbatch call (its own `set_gres_string`)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    return set_gres_string(SimpleNamespace(resources=_Resources(job["resources"]))).strip()


def test_gpu_on_device_rules_only_and_none_without_cuda(runs):
    """device: auto asks for a GPU exactly where its jobs will find CUDA (issue 21, item 3)."""
    first, second = runs
    for job in first:
        gpu = job["resources"].get("gpu", 0)
        assert gpu in (0, 1), job
        if job["rule"] in GPU_RULES:
            assert gpu == 1, job
    # rules that use no device never ask for a GPU
    cpu_only = {"summary", "summary_metric", "paired_difference", "fig3", "fig4",
                "fig5", "fig6", "fig7", "crops", "synthetic_voc"}
    assert all(j["resources"].get("gpu", 0) == 0 for j in first if j["rule"] in cpu_only)
    # the sbatch calls: --gpus=1 for a job that uses the device, nothing for a job that does not
    for job in submitted(first):
        assert sbatch_gpu_args(job) == ("--gpus=1" if job["resources"].get("gpu", 0) else ""), job
    assert {sbatch_gpu_args(j) for j in submitted(first) if j["rule"] in GPU_RULES} == {"--gpus=1"}
    # device: auto without CUDA -> no job asks for a GPU: neither SLURM nor the default profile's `gpu: 1`
    # limit, which would otherwise run the device jobs one at a time on a CPU machine
    assert GPU_RULES <= {j["rule"] for j in second}
    assert all(j["resources"].get("gpu", 0) == 0 for j in second)
    assert all(sbatch_gpu_args(j) == "" for j in submitted(second))


def test_threads_fit_the_test_cluster_with_max_threads(runs):
    first, second = runs
    heavy = [j for j in first if j["rule"] in GPU_RULES]
    # the heavy rules are multi-threaded: --cpus-per-task above 1 on a real cluster
    assert heavy and all(j["threads"] > 1 for j in heavy), heavy
    assert all(1 <= j["threads"] <= 2 for j in second)
