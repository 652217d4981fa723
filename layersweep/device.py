"""Device selection: `device: auto` means CUDA when present, else the CPU."""
import torch

from .errors import LayersweepError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LayersweepError(f"config key 'device' is '{name}' but this machine has no CUDA device; use 'auto' or 'cpu'.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LayersweepError(f"config key 'device' has the unknown value '{name}'; use 'auto', 'cpu' or 'cuda[:N]'.") from None
