"""One GPU per running job on a several-GPU workstation.

Snakemake runs up to `resources: gpu` device jobs at once, each its own process, and `device: auto` alone would
send all of them to cuda:0. A job instead claims a GPU slot: an exclusive `flock` on the lock file of one
physical GPU, held until the job's process ends. The kernel drops the lock when the process exits, however it
ends (success, exception, kill), so a dead job never leaves a stale claim behind; the pid written into the file
is only for people reading it.

Physical GPUs are named by `CUDA_VISIBLE_DEVICES` when it is set (so a user's or a scheduler's selection is
kept and two jobs that see different subsets still agree on names), else 0..N-1. When a scheduler already gave
the job its own GPU (SLURM sets `CUDA_VISIBLE_DEVICES` to the job's allocation) the job sees one device and
takes it without a lock.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from pathlib import Path

log = logging.getLogger("layersweep")

_HELD: dict[int, int] = {}  # slot index -> open fd of its lock, for this process's lifetime


def lock_dir() -> Path:
    """Where the per-GPU lock files live: $LAYERSWEEP_GPU_LOCK_DIR, else a per-user directory in /tmp."""
    d = os.environ.get("LAYERSWEEP_GPU_LOCK_DIR") or os.path.join(tempfile.gettempdir(), f"layersweep-gpu-{os.getuid()}")
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def physical_ids(n_devices: int, env=None) -> list[str]:
    """Names of the `n_devices` GPUs torch sees, as the machine knows them (CUDA_VISIBLE_DEVICES entries)."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return [str(i) for i in range(n_devices)]
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return ids[:n_devices]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_slot(n_devices: int, *, env=None, directory: Path | None = None, wait: float = 24 * 3600.0,
               poll: float = 1.0) -> int:
    """Claim a free GPU and return its torch index (0..n_devices-1); wait while all are taken.

    One visible device: 0 without a lock (a scheduler isolated it, or there is only one). The claim lasts
    until `release_slot(index)` or the end of the process.
    """
    if n_devices <= 1:
        return 0
    ids = physical_ids(n_devices, env)
    directory = lock_dir() if directory is None else Path(directory)
    deadline = time.monotonic() + wait
    while True:
        for index, name in enumerate(ids):
            if index in _HELD:
                continue
            fd = _try_lock(directory / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock")
            if fd is not None:
                _HELD[index] = fd
                log.info("claimed GPU %s (cuda:%d of %d visible)", name, index, len(ids))
                return index
        if time.monotonic() >= deadline:
            raise TimeoutError(f"all {len(ids)} GPUs stayed claimed by other layersweep jobs for {wait:g} s "
                               f"(lock files in {directory}).")
        time.sleep(poll)


def release_slot(index: int) -> None:
    fd = _HELD.pop(index, None)
    if fd is not None:
        os.close(fd)  # closing the file drops the flock


class gpu_slot:
    """`with gpu_slot(n) as index:` claims a GPU for the block and releases it on exit, also on an exception."""

    def __init__(self, n_devices: int, **kw):
        self.n_devices, self.kw, self.index = n_devices, kw, None

    def __enter__(self) -> int:
        self.index = claim_slot(self.n_devices, **self.kw)
        return self.index

    def __exit__(self, *exc):
        release_slot(self.index)
        return False
