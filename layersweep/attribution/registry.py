"""The method registry: one small file per method in `methods/`, each registering itself.

A method declares which shared pass it needs and a function from that pass's per-layer tensors to maps:

- pass "gradient" (the CAM family): `fn(activations, grads) -> cam`, tensors (B, C, H, W) of one
  layer, the gradients being those of the target logit (or of the method's `utility`); `cam` is
  (B, H, W). The engine then clamps at 0, as pytorch-grad-cam's `BaseCAM.compute_cam_per_layer` does
  (`np.maximum(cam, 0)`) before resizing. A function with a single positional parameter gets only the
  activations (no backward is run for it). Keyword-only parameters are filled by name: `op` (the site's
  `graph.Node`, with .kind and .module; None at the model input), `position` (-1 = input), `logits` (B, K), `targets` (B,), and,
  for a Hessian term, `class_sums` (B, K) = <dz_k/dA, A> and `class_grad_means` (B, K, C) = spatial mean
  of dz_k/dA (one backward per class, contracted on the fly; see `passes.gradient_pass`).
- pass "deeplift" (the DeepLift family): `fn(delta, multiplier) -> map`, tensors
  (images, baselines, C, H, W) of one layer: `delta = a_l(x) - a_l(b)` and captum's DeepLift multiplier
  at that layer for each (image, baseline) pair; `map` is (images, baselines, H, W). The engine averages
  it over the baselines (as captum's DeepLiftShap does), so a method never sees more than `max_pairs` pairs.
- pass "deeplift0" (LIFT-CAM): `fn(activations, contributions) -> (map, weights)`, both (B, C, H, W):
  the layer's activations A and captum's DeepLift contributions of A to the target logit of the network
  after the layer, with the reference 0 at the layer (one DeepLift backward per layer group).
- pass "perturb" (AblationCAM, SHAP-CAM|Pi|, Shap-CAM, ScoreCAM): `fn(ctx) -> map` or `(map, weights)`,
  `ctx` a `perturb.PerturbContext` (activations, target logits, per-crop generators, tail and full-network
  evaluators batched by `perturb_batch`, the method's options, and a per-group cache for weights shared
  by a conv and the ReLU / MaxPool after it).
- pass "mix" (RefineCAM): no pass of its own. Its option `base` names another method, run in that method's
  pass at the same layers; `fn(ordered, *, size, **options) -> {layer: (maps (B, H, W), constant (B,))}` gets
  the base maps as a list of (layer, (B, h_l, w_l)) ordered deep -> shallow, and returns input-sized maps
  (`engine._mixed_methods`, `refine.py`). A mix method's map at a layer depends on the deeper layers too, so
  whoever recomputes it on new inputs asks for all its layers (`pipeline.method_on_inputs`).

A method function must not modify its inputs in place: they are shared by every method of the pass.
Adding a method touches only its file in `methods/` (and the config's method list).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import LayersweepError

PASSES = ("gradient", "deeplift", "deeplift0", "perturb", "mix")


# node kinds a method can restrict itself to (`graph.Node.kind`, and "input" for the model input)
LAYER_KINDS = ("input", "conv", "batchnorm", "relu", "maxpool", "add", "linear")


@dataclass(frozen=True)
class Method:
    name: str
    pass_kind: str      # one of PASSES: "gradient" | "deeplift" | "deeplift0" | "perturb" | "mix"
    fn: Callable
    reference: str      # the library implementation it reproduces (for docs and error messages)
    # op kinds of the layers the method is defined at (e.g. ("conv",) for FullGrad's bias term); None = all
    layer_kinds: tuple[str, ...] | None = None
    # True: fn returns (map, weights) with weights (B, C) per-channel coefficients (channel-weighted CAMs)
    weights: bool = False
    # gradient pass: u(logits (B, K), targets (B,)) -> (B,), the per-image utility whose gradient seeds the
    # backward (ReST, FinerCAM's weighted target); None = the target logit
    utility: Callable | None = None
    # cost(facts: work.LayerFacts, options: dict) -> work.Work: full-network forward/backward equivalents per
    # crop at one layer, beyond the shared pass. None: the pass kind's default (work.DEFAULT_LAYER_COST).
    cost: Callable | None = None
    # option name -> default (config `attribution.options.<method>.<option>`); checks: name -> fn(value) -> bool
    options: dict = field(default_factory=dict)
    option_checks: dict = field(default_factory=dict)
    # how each check is described in the one-sentence error ("an integer in 1..100000")
    option_rules: dict = field(default_factory=dict)


_REGISTRY: dict[str, Method] = {}


@dataclass(frozen=True)
class Option:
    """A method option: its default, a check of a value, and the check in words for the error message."""
    default: object
    check: Callable
    rule: str


def int_option(default: int, lo: int, hi: int) -> Option:
    return Option(default, lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                  f"an integer in {lo}..{hi}")


def choice_option(default: str, choices: tuple) -> Option:
    return Option(default, lambda v: v in choices, "one of " + ", ".join(map(repr, choices)))


def register(name: str, pass_kind: str, reference: str = "", *, layer_kinds=None, weights: bool = False,
             utility: Callable | None = None, cost: Callable | None = None, options: dict | None = None):
    """Decorator: `@register("gradcampp", "gradient", "pytorch_grad_cam.GradCAMPlusPlus", weights=True)`.

    `cost`: the method's work per crop at one layer (see layersweep.attribution.work); perturbation methods
    declare it, e.g. `cost=work.tail_per_channel`.
    `options`: {name: Option(default, check, rule)} (see `Option`).
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
        opts = dict(options or {})
        _REGISTRY[name] = Method(name, pass_kind, fn, reference, layer_kinds=layer_kinds, weights=weights,
                                 utility=utility, cost=cost, options={k: o.default for k, o in opts.items()},
                                 option_checks={k: o.check for k, o in opts.items()},
                                 option_rules={k: o.rule for k, o in opts.items()})
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


def method_options(name: str, given: dict | None = None) -> dict:
    """The method's options: its defaults updated by `given` (config `attribution.options.<name>`), checked.

    The key `layers` is the rule's business (which layers to run), not the method's, and is dropped here.
    """
    m = get_method(name)
    given = {k: v for k, v in dict(given or {}).items() if k != "layers"}
    out = dict(m.options)
    for key, value in given.items():
        if key not in m.options:
            known = ", ".join(sorted(m.options)) or "none"
            raise LayersweepError(f"'attribution.options.{name}.{key}' is not an option of method {name!r} "
                                  f"(its options: {known}).")
        if not m.option_checks[key](value):
            raise LayersweepError(f"'attribution.options.{name}.{key}' is {value!r}; it must be {m.option_rules[key]}.")
        out[key] = value
    return out
