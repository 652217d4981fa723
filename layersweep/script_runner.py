"""What every Snakemake script shares: logging to the rule's log, thread count, and clean failure.

A script is `run_script(snakemake, main)` where `main(snakemake)` does the work. Bad input raises
LayersweepError; the runner prints its one sentence, removes any output the job started, and exits 1.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from .errors import LayersweepError

log = logging.getLogger("layersweep")


def _remove_outputs(outputs) -> None:
    for out in outputs:
        p = Path(out)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def run_script(snakemake, main) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)  # the library's one-sentence warnings (constant maps, bf16) reach the rule's log
    import torch
    torch.set_num_threads(max(1, int(snakemake.threads)))
    try:
        main(snakemake)
    except LayersweepError as exc:
        _remove_outputs(snakemake.output)
        log.error("%s", exc)
        print(f"\nlayersweep: {exc}\n", file=sys.stderr)
        sys.exit(1)
