"""A hard kill in the middle of a write loses nothing and leaves nothing that looks complete.

For each kind of writer, in a copy of a finished run (the session's `demo_run` or `demo_study`, or a fresh
directory for the download): delete the outputs of one job, start Snakemake on them with the test-only hook
LAYERSWEEP_TEST_PAUSE (layersweep/faults.py) naming one final path, so that its writer stops at its midpoint
(every byte in the temp file, nothing renamed; the download half-way through the transfer), then SIGKILL
Snakemake and the job together, as a dead node or a power cut would. Then:
- the paused final path is absent and its temp file is there (the kill hit mid-write, not before it);
- the next run, `snakemake --unlock` (Snakemake cannot tell a dead run's lock from a live one) and then the same
  command, runs exactly that job once, leaves no temp file, and its outputs equal the uninterrupted run's.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from layersweep.faults import PAUSE, PAUSE_FLAG
from layersweep.io import atomic_path
from test_download import Handler, Route, Server
from workflow import SNAKEMAKE, TEST_DEMO, copy_project, planned_jobs, snakemake, snakemake_env

pytestmark = pytest.mark.slow

# Fields of the head's outputs that time the training: they differ between any two runs.
TIMINGS = {"history.parquet": ["seconds"], "test_accuracy.json": ["seconds_per_epoch"]}
ARCHIVE = "resources/downloads/VOCtest_06-Nov-2007.tar"


@dataclass(frozen=True)
class Writer:
    rule: str
    outputs: tuple[str, ...]  # the job's outputs, all deleted before the killed run
    pause: str                # the final path whose write is killed (the job's last rename where there are several)
    run: str = "demo_run"     # the finished run the test copies
    target: str | None = None  # what the next run asks for (default: `pause`); an output the killed job had
                               # already renamed into place, so that only Snakemake's incomplete mark reruns it

    @property
    def args(self) -> tuple[str, ...]:
        return () if self.run == "demo_study" else ("--configfile", TEST_DEMO)


WRITERS = {
    "attribution shard": Writer("attribution", ("results/attributions/gradcampp/shard-0.npz",),
                                "results/attributions/gradcampp/shard-0.npz"),
    "metric shard": Writer("metric", ("results/metrics/core/gradcampp/shard-0.parquet",),
                           "results/metrics/core/gradcampp/shard-0.parquet"),
    "summary": Writer("summary_metric", ("results/summary/core/plain.parquet",), "results/summary/core/plain.parquet"),
    # the PDF is renamed last: its CSV and PNG are in place when the kill comes
    "figure with its CSV": Writer("fig5", ("figures/fig5.pdf", "figures/fig5.png", "figures/tables/fig5.csv"),
                                  "figures/fig5.pdf", target="figures/tables/fig5.csv"),
    "head checkpoint": Writer("train_head", ("results/model/head.pt", "results/model/history.parquet",
                                             "results/model/test_accuracy.json"), "results/model/head.pt"),
    # csv, md, html in that order: the first two are in place when the kill comes
    "table": Writer("paper_table", ("tables/liftcam-table3.csv", "tables/liftcam-table3.md",
                                    "tables/liftcam-table3.html"), "tables/liftcam-table3.html",
                    run="demo_study", target="tables/liftcam-table3.csv"),
    "download": Writer("download_voc", (ARCHIVE,), ARCHIVE, run="download"),
}


def temp_files(path: Path) -> list[Path]:
    """The temp files of a write of `path`: atomic_path's '.<name>.<8 chars>.part', the download's '<name>.part'."""
    return [Path(p) for p in glob.glob(str(path.parent / f".{glob.escape(path.name)}.*.part"))
            + glob.glob(glob.escape(str(path)) + ".part")]


def incomplete_marks(work: Path) -> set[str]:
    """The outputs Snakemake's metadata marks incomplete: a file per output under .snakemake/incomplete, named by
    the output's path in urlsafe base64 (cut into '@'-prefixed directories when long)."""
    import base64
    import binascii
    root = work / ".snakemake" / "incomplete"
    marks = set()
    for p in root.rglob("*") if root.exists() else ():
        if p.is_file():
            try:
                marks.add(base64.urlsafe_b64decode("".join(s.lstrip("@") for s in p.relative_to(root).parts)).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):  # not a mark (e.g. a migration flag)
                continue
    return marks


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def run_and_kill(work: Path, writer: Writer, flag: Path) -> str:
    """Start Snakemake on the writer's outputs, wait until its writer pauses, SIGKILL Snakemake and the job."""
    env = dict(snakemake_env(), **{PAUSE: glob.escape(str(work / writer.pause)), PAUSE_FLAG: str(flag)})
    log = open(flag.with_suffix(".log"), "w+")
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", *writer.outputs, *writer.args], cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 1500  # the demo runs' own limit (tests/workflow.py)
        while not flag.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"the {writer.rule} job never reached its pause point:\n{log.read()[-4000:]}")
            time.sleep(0.2)
        job = int(flag.read_text())
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake first: it must not see its job die and clean up
        with contextlib.suppress(ProcessLookupError):  # gone already if it shared Snakemake's process group
            os.kill(job, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while alive(job) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(job)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.seek(0)
        text = log.read()
        log.close()
    return text


def assert_same_output(new: Path, ref: Path) -> None:
    """The recomputed file holds what the uninterrupted run wrote (timings aside)."""
    name = new.name
    if name.endswith(".npz"):
        a, b = np.load(new), np.load(ref)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{new}: {key}")
    elif name.endswith(".parquet"):
        drop = TIMINGS.get(name, [])
        pd.testing.assert_frame_equal(pd.read_parquet(new).drop(columns=drop), pd.read_parquet(ref).drop(columns=drop))
    elif name.endswith(".json"):
        a, b = json.loads(new.read_text()), json.loads(ref.read_text())
        for key in TIMINGS.get(name, []):
            a.pop(key), b.pop(key)
        assert a == b, name
    elif name.endswith(".pt"):
        a, b = torch.load(new, weights_only=True), torch.load(ref, weights_only=True)
        assert a.keys() == b.keys() and a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), key
        assert {k: v for k, v in a.items() if k != "state_dict"} == {k: v for k, v in b.items() if k != "state_dict"}
    else:  # csv, md, html, pdf, png, tar: the bytes
        assert new.read_bytes() == ref.read_bytes(), f"{new} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def archive_server():
    """The download's mirror: a 3 MiB file over HTTP on 127.0.0.1 that honours Range (tests/test_download.py)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state.routes["/VOCtest.tar"] = Route(body=random.Random(0).randbytes(3 << 20))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def download_workdir(work: Path, server: Server) -> tuple[Path, Path]:
    """A project copy whose config points the test archive at the local mirror; the reference is the served file."""
    work.mkdir()
    copy_project(work)
    body = server.routes["/VOCtest.tar"].body
    cfg = yaml.safe_load((work / "config" / "demo.yaml").read_text())
    cfg["data"]["archives"] = {"test": {"file": Path(ARCHIVE).name, "md5": hashlib.md5(body).hexdigest(),
                                        "mirrors": [server.url("/VOCtest.tar")]}}
    (work / TEST_DEMO).write_text(yaml.safe_dump(cfg, sort_keys=False))
    ref = work.parent / "uninterrupted"
    ref.mkdir()
    (ref / Path(ARCHIVE).name).write_bytes(body)
    return work, ref


@pytest.mark.parametrize("kind", list(WRITERS), ids=lambda kind: kind.replace(" ", "-"))
def test_killed_writer_leaves_nothing_complete_and_the_next_run_recomputes_it(kind, request, tmp_path):
    writer = WRITERS[kind]
    work = tmp_path / "work"
    if writer.run == "download":
        server = request.getfixturevalue("archive_server")
        work, ref_dir = download_workdir(work, server)
        reference = {ARCHIVE: ref_dir / Path(ARCHIVE).name}
    else:
        finished = request.getfixturevalue(writer.run)["work"]
        shutil.copytree(finished, work, symlinks=True)  # copy2: the mtimes Snakemake compares are kept
        reference = {out: finished / out for out in writer.outputs}
    for out in writer.outputs:
        (work / out).unlink(missing_ok=True)
    run_and_kill(work, writer, tmp_path / "paused")

    # nothing at the final path; the temp file shows the kill came mid-write
    paused = work / writer.pause
    assert not paused.exists(), f"{writer.pause} is at its final path after the kill"
    assert temp_files(paused), f"no temp file beside {writer.pause}: the kill did not come mid-write"
    if writer.run == "download":
        part = temp_files(paused)[0]
        assert 0 < part.stat().st_size < len(server.routes["/VOCtest.tar"].body)
    # whatever the job had already renamed into place is marked incomplete for the next run
    assert set(writer.outputs) <= incomplete_marks(work) | {o for o in writer.outputs if not (work / o).exists()}
    assert incomplete_marks(work) <= set(writer.outputs)

    # the next run: unlock (the dead run's lock), then the same command on the target
    snakemake(work, "--unlock", *writer.args)
    proc = snakemake(work, writer.target or writer.pause, *writer.args)
    assert planned_jobs(proc) == {writer.rule: 1}, proc.stdout[-3000:] + proc.stderr[-3000:]
    for out in writer.outputs:
        assert not temp_files(work / out), f"a stale temp file of {out} was left"
        assert_same_output(work / out, reference[out])
    assert not incomplete_marks(work)
    if writer.run == "download":  # resumed from the kept bytes, not fetched again
        ranges = [r for path, r in server.requests if path == "/VOCtest.tar"]
        assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=") and len(ranges) == 2


def test_a_write_removes_only_the_temp_files_of_its_own_path(tmp_path):
    """What a killed write left beside `fig5.pdf` goes; the temps of other outputs and a download's resumable
    '.part' stay (they may be another job's write in progress, or bytes to resume)."""
    stale = [tmp_path / ".fig5.pdf.ab_cd123.part", tmp_path / ".fig5.pdf.00000000.part"]
    kept = [tmp_path / ".fig5.pdf.x.ab_cd123.part", tmp_path / ".fig5.png.ab_cd123.part",
            tmp_path / "fig5.pdf.part", tmp_path / ".fig5.pdf.ab_cd1234.part", tmp_path / "fig5.png"]
    for p in stale + kept:
        p.write_text("left over")
    with atomic_path(tmp_path / "fig5.pdf") as tmp:
        tmp.write_text("new")
    assert (tmp_path / "fig5.pdf").read_text() == "new"
    assert not [p for p in stale if p.exists()] and all(p.exists() for p in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fig5.pdf"] + [p.name for p in kept])
