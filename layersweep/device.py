"""Device selection: `device: auto` means CUDA when present, else the CPU."""
import torch

from .errors import LayersweepError


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
