"""One GPU per running job: slot claims with a faked device count (no GPU needed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from layersweep import gpu
from layersweep.gpu import claim_slot, gpu_slot, physical_ids, release_slot


@pytest.fixture()
def locks(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSWEEP_GPU_LOCK_DIR", str(tmp_path))
    yield tmp_path
    for index in list(gpu._HELD):
        release_slot(index)


def test_physical_ids_follow_cuda_visible_devices():
    assert physical_ids(3, env={}) == ["0", "1", "2"]
    assert physical_ids(2, env={"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert physical_ids(1, env={"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == ["GPU-ab12"]


def test_one_visible_device_is_taken_without_a_lock(locks):
    # SLURM sets CUDA_VISIBLE_DEVICES to the job's own GPU: torch sees one device
    assert claim_slot(1, env={"CUDA_VISIBLE_DEVICES": "3"}) == 0
    assert not list(locks.iterdir())


def test_concurrent_claims_get_distinct_gpus(locks):
    """Four jobs (processes) claim at once on four GPUs: four different slots; a fifth waits until a job ends."""
    procs = [_holder(locks, 4) for _ in range(4)]  # started together, so their claims race
    try:
        slots = sorted(_read_slot(p) for p in procs)
        assert slots == [0, 1, 2, 3]
        with pytest.raises(TimeoutError, match="all 4 GPUs stayed claimed"):
            claim_slot(4, wait=0.3, poll=0.05)
        procs[2].send_signal(signal.SIGKILL)  # a job dies without any cleanup: its GPU is free again
        procs[2].wait()
        assert claim_slot(4, wait=10, poll=0.05) == procs[2].slot
    finally:
        for p in procs:
            p.kill()
            p.wait()


_HOLDER = """
import sys, time
from layersweep.gpu import claim_slot
print(claim_slot(int(sys.argv[1]), wait=30, poll=0.02), flush=True)
time.sleep(60)
"""


def _holder(locks, n):
    env = dict(os.environ, LAYERSWEEP_GPU_LOCK_DIR=str(locks))
    return subprocess.Popen([sys.executable, "-c", _HOLDER, str(n)], stdout=subprocess.PIPE, text=True, env=env)


def _read_slot(p):
    p.slot = int(p.stdout.readline())
    return p.slot


def test_release_on_exception(locks):
    with pytest.raises(RuntimeError):
        with gpu_slot(2, wait=0.3, poll=0.05) as index:
            assert index == 0
            raise RuntimeError("the job failed")
    assert not gpu._HELD
    with gpu_slot(2, wait=0.3, poll=0.05) as a, gpu_slot(2, wait=0.3, poll=0.05) as b:
        assert (a, b) == (0, 1)  # slot 0 was released by the failed job


def test_a_stale_lock_file_of_a_dead_pid_does_not_block(locks):
    """A lock file left by a job that died (pid written, process gone) is free: the kernel dropped its flock."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (locks / "gpu-0.lock").write_text(f"{dead.pid}\n")
    assert claim_slot(2, wait=0.3, poll=0.05) == 0
    assert (locks / "gpu-0.lock").read_text() == f"{os.getpid()}\n"


def test_names_from_cuda_visible_devices_are_the_lock_names(locks, monkeypatch):
    """Two jobs that see different subsets still agree: the lock is per physical GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    assert claim_slot(2, wait=0.3, poll=0.05) == 0
    assert (locks / "gpu-4.lock").exists() and not (locks / "gpu-0.lock").exists()


def test_device_auto_spreads_jobs_over_the_gpus(locks, monkeypatch):
    """`device: auto` with three (faked) GPUs: each claim gets its own cuda:N; explicit cuda:N is kept."""
    import torch

    from layersweep.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    got = [resolve_device("auto", claim_gpu=True) for _ in range(3)]
    assert got == [torch.device("cuda", i) for i in range(3)]
    assert resolve_device("cuda:2", claim_gpu=True) == torch.device("cuda", 2)
    assert resolve_device("auto") == torch.device("cuda")  # library use: no claim
