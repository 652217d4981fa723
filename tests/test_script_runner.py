"""What every Snakemake script shares: a failing job removes the outputs it started (files and directories)
and says one sentence; `device` values resolve or are refused by name."""
import logging
from types import SimpleNamespace

import pytest
import torch

from layersweep.device import resolve_device
from layersweep.errors import LayersweepError
from layersweep.script_runner import run_script


@pytest.fixture
def restore_logging_and_threads():
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], root.level = handlers, level
    torch.set_num_threads(threads)


def test_failed_job_removes_its_file_and_directory_outputs(tmp_path, capsys, restore_logging_and_threads):
    out_file, out_dir, log = tmp_path / "shard-0.npz", tmp_path / "voc", tmp_path / "logs" / "job.log"

    def main(sm):
        out_file.write_bytes(b"half written")
        (out_dir / "VOCdevkit").mkdir(parents=True)  # a directory output, partly filled
        (out_dir / "VOCdevkit" / "a.jpg").write_bytes(b"x")
        raise LayersweepError("the crop file x.npy does not exist; run the crop stage first.")

    sm = SimpleNamespace(log=[str(log)], threads=1, output=[str(out_file), str(out_dir), str(tmp_path / "never")])
    with pytest.raises(SystemExit) as exit_info:
        run_script(sm, main)
    assert exit_info.value.code == 1
    assert not out_file.exists() and not out_dir.exists()
    assert "layersweep: the crop file x.npy does not exist; run the crop stage first." in capsys.readouterr().err
    assert "the crop file x.npy does not exist" in log.read_text()


def test_other_errors_keep_their_traceback(tmp_path, restore_logging_and_threads):
    """Only LayersweepError is bad input; a bug must surface as itself (Snakemake then removes the outputs)."""
    def main(sm):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_script(SimpleNamespace(log=[], threads=1, output=[]), main)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LayersweepError, match=r"^config key 'device' has the unknown value 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused(name):
    with pytest.raises(LayersweepError, match=f"^config key 'device' is '{name}' but this machine has no CUDA"):
        resolve_device(name)
