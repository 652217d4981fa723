"""Fault injection for the kill test (tests/test_kill.py): a writer stops at its midpoint when told to.

With LAYERSWEEP_TEST_PAUSE set to a glob of a final output path (matched against its absolute path), the
writer of that path writes the file LAYERSWEEP_TEST_PAUSE_FLAG (its process id) and sleeps there, so that
the test can SIGKILL the job mid-write. Unset (always, outside that test), `pause_point` returns at once.
"""
from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

PAUSE = "LAYERSWEEP_TEST_PAUSE"
PAUSE_FLAG = "LAYERSWEEP_TEST_PAUSE_FLAG"


def pause_point(final_path: str | os.PathLike) -> None:
    """Sleep until killed if LAYERSWEEP_TEST_PAUSE matches `final_path`; return at once otherwise."""
    pattern = os.environ.get(PAUSE)
    if not pattern or not fnmatch.fnmatchcase(os.path.abspath(final_path), pattern):
        return
    flag = Path(os.environ[PAUSE_FLAG])
    tmp = flag.with_name(flag.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, flag)  # the test reads a whole pid or nothing
    while True:
        time.sleep(60)
