"""Device selection: `device: auto` means CUDA when present, else the CPU."""
import os

import torch

from .errors import LayersweepError

# "1" or "0": what the DAG assumes about CUDA for `device: auto` (see `cuda_for_jobs`)
CUDA_ENV = "LAYERSWEEP_CUDA"


def cuda_for_jobs(env=None) -> bool:
    """Whether the pipeline's `device: auto` jobs will find CUDA, decided when the DAG is built.

    $LAYERSWEEP_CUDA, when set to 1 or 0, is the answer: tests fake either kind of machine with it, and on a
    cluster whose login node has no GPU, `LAYERSWEEP_CUDA=1` makes `auto` jobs ask the scheduler for one.
    Otherwise this machine decides, with the check `resolve_device('auto')` makes in the job itself. The
    workflow asks once per set of GPU device files and CUDA environment and caches the answer
    (layersweep.dagfacts), so a parse does not import torch for it.
    """
    env = os.environ if env is None else env
    value = env.get(CUDA_ENV, "").strip()
    if value:
        if value not in ("0", "1"):
            raise LayersweepError(f"environment variable {CUDA_ENV} is {value!r}; set it to 1 (CUDA) or 0 (none), or unset it.")
        return value == "1"
    return torch.cuda.is_available()


def gpu_request(device: str, env=None) -> int:
    """The `gpu` resource of a rule that runs on config key 'device': 0 for cpu, 1 for cuda and cuda:N, and
    for auto 1 only where its jobs will find CUDA (`cuda_for_jobs`), so that on a machine without CUDA the
    default profile's `gpu: 1` limit does not run the CPU jobs one at a time."""
    if device == "cpu":
        return 0
    if device == "auto":
        return int(cuda_for_jobs(env))
    return 1


def resolve_device(name: str = "auto", *, claim_gpu: bool = False) -> torch.device:
    """The torch device of config key 'device'.

    With `claim_gpu` (the pipeline's device jobs), `auto` and `cuda` on a machine with several visible GPUs
    claim one of them for this process (`layersweep.gpu`), so concurrent jobs spread over the GPUs instead of
    all landing on cuda:0. An explicit `cuda:N` is used as given.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LayersweepError(f"config key 'device' is '{name}' but this machine has no CUDA device; use 'auto' or 'cpu'.")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LayersweepError(f"config key 'device' has the unknown value '{name}'; use 'auto', 'cpu' or 'cuda[:N]'.") from None
    if device.type == "cuda" and device.index is None and claim_gpu:
        from .gpu import claim_slot

        device = torch.device("cuda", claim_slot(torch.cuda.device_count()))
    return device
