"""The `gpu` resource of the device rules (issue 21, item 3): `device: auto` asks for a GPU only where its jobs
will find CUDA. The dry runs of the whole DAG are in tests/test_profiles.py."""
import pytest
import torch

from layersweep.device import CUDA_ENV, cuda_for_jobs, gpu_request
from layersweep.errors import LayersweepError


@pytest.mark.parametrize("device,cuda,expected", [
    ("cpu", "1", 0), ("cpu", "0", 0),
    ("auto", "1", 1), ("auto", "0", 0),
    ("cuda", "0", 1), ("cuda:1", "0", 1), ("cuda", "1", 1),  # an explicit GPU is always asked for
])
def test_gpu_request(device, cuda, expected):
    assert gpu_request(device, env={CUDA_ENV: cuda}) == expected


def test_without_the_override_auto_follows_this_machine():
    """Unset (or empty), the job's own check decides: torch.cuda.is_available(), as resolve_device('auto')."""
    assert cuda_for_jobs(env={}) is torch.cuda.is_available()
    assert gpu_request("auto", env={CUDA_ENV: " "}) == int(torch.cuda.is_available())


def test_a_bad_override_is_one_sentence():
    with pytest.raises(LayersweepError, match=r"^environment variable LAYERSWEEP_CUDA is 'yes'; set it to 1 "
                                              r"\(CUDA\) or 0 \(none\), or unset it\.$"):
        gpu_request("auto", env={CUDA_ENV: "yes"})
