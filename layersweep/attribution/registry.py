"""The method registry: one small file per method in `methods/`, each registering itself.

A method declares which shared pass it needs and a function from that pass's per-layer tensors to maps:

- pass "gradient" (the CAM family): `fn(activations, grads) -> cam`, tensors (B, C, H, W) of one
  layer, the gradients being those of the target logit (or of the method's `utility`); `cam` is
  (B, H, W). The engine then clamps at 0, as pytorch-grad-cam's `BaseCAM.compute_cam_per_layer` does
  (`np.maximum(cam, 0)`) before resizing. A function with a single positional parameter gets only the
  activations (no backward is run for it). Keyword-only parameters are filled by name: `op` (the layer's
  `network.Op`, None at the model input), `position` (-1 = input), `logits` (B, K), `targets` (B,), and,
  for a Hessian term, `class_sums` (B, K) = <dz_k/dA, A> and `class_grad_means` (B, K, C) = spatial mean
  of dz_k/dA (one backward per class, contracted on the fly; see `passes.gradient_pass`).
- pass "deeplift" (the DeepLift family): `fn(delta, multiplier) -> map`, tensors
  (images, baselines, C, H, W) of one layer: `delta = a_l(x) - a_l(b)` and captum's DeepLift multiplier
  at that layer for each (image, baseline) pair; `map` is (images, baselines, H, W). The engine averages
  it over the baselines (as captum's DeepLiftShap does), so a method never sees more than `max_pairs` pairs.

A method function must not modify its inputs in place: they are shared by every method of the pass.
Adding a method touches only its file in `methods/` (and the config's method list).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import LayersweepError

PASSES = ("gradient", "deeplift")


# op kinds a layer can have (`network.Op.kind` of model.features, and "input" for layer -1)
LAYER_KINDS = ("input", "conv", "relu", "maxpool")


@dataclass(frozen=True)
class Method:
    name: str
    pass_kind: str      # "gradient" | "deeplift"
    fn: Callable
    reference: str      # the library implementation it reproduces (for docs and error messages)
    # op kinds of the layers the method is defined at (e.g. ("conv",) for FullGrad's bias term); None = all
    layer_kinds: tuple[str, ...] | None = None
    # True: fn returns (map, weights) with weights (B, C) per-channel coefficients (channel-weighted CAMs)
    weights: bool = False
    # gradient pass: u(logits (B, K), targets (B,)) -> (B,), the per-image utility whose gradient seeds the
    # backward (ReST, FinerCAM's weighted target); None = the target logit
    utility: Callable | None = None
    # cost(facts: cost.LayerFacts, options: dict) -> cost.Work: full-network forward/backward equivalents per
    # crop at one layer, beyond the shared pass. None: the pass kind's default (cost.DEFAULT_LAYER_COST).
    cost: Callable | None = None


_REGISTRY: dict[str, Method] = {}


def register(name: str, pass_kind: str, reference: str = "", *, layer_kinds=None, weights: bool = False,
             utility: Callable | None = None, cost: Callable | None = None):
    """Decorator: `@register("gradcampp", "gradient", "pytorch_grad_cam.GradCAMPlusPlus", weights=True)`.

    `cost`: the method's work per crop at one layer (see layersweep.cost); perturbation methods declare it,
    e.g. `cost=cost.tail_per_channel`.
    """
    if pass_kind not in PASSES:
        raise ValueError(f"pass {pass_kind!r} of method {name!r} is not one of {PASSES}")
    if layer_kinds is not None:
        layer_kinds = tuple(layer_kinds)
        if not set(layer_kinds) <= set(LAYER_KINDS):
            raise ValueError(f"layer_kinds {layer_kinds} of method {name!r} are not all in {LAYER_KINDS}")

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"attribution method {name!r} is registered twice")
        _REGISTRY[name] = Method(name, pass_kind, fn, reference, layer_kinds=layer_kinds, weights=weights,
                                 utility=utility, cost=cost)
        return fn

    return deco


def _load() -> None:
    from . import methods  # noqa: F401  (importing the package registers every method file)


def available_methods() -> list[str]:
    """Names of every registered attribution method, sorted."""
    _load()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    _load()
    if name not in _REGISTRY:
        raise LayersweepError(f"unknown attribution method {name!r}; known methods are {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]
