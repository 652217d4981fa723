"""The metric registry: one file per metric in layersweep/metrics/, each registering itself at import.

    register("road", columns={"road_morf": "lower", ...}, needs=("forwards",), rescaled=False,
             options={"percentiles": list_option(...)}, cost=..., reference="...", definition="...", score=_score)

A metric is one job per (method, shard) (rule `metric`; `metric_rescaled` per `rescale.r` when it has rescaled
columns), one per-image table, one summary per scoring (rule `summary_metric`), and panels in a figure. Fields:
- columns: {column: "higher" | "lower" | "none"}: the values it reports per map and which way is better ("none":
  a reference value stored beside them, e.g. a chance level); these are summarised with bootstrap CIs;
- needs: what it uses besides the maps: "forwards" (the model), "attribution" (the method again, on new
  inputs), "boxes" (object boxes: data.samples images), "masks" (ground-truth masks: data.source shapes);
- rescaled: the columns also scored on the maps rescaled to sum r*H*W (True = all, False = none): those that
  depend on the map's values, not only on their order;
- score(ctx): the computation; gets a `MetricContext` (layersweep.metrics.metric_shard) and returns
  {column: array (L*n,)} in layer-major order (every column it declares, or its rescaled ones on rescaled maps;
  rows of constant maps are set to NaN by the stage), plus any per-map detail column it keeps beside them;
- options: {name: Option} with defaults and checks, set in `metrics.options.<metric>.<name>`, or, for a metric
  registered with `top_level_options=True` (core), in `metrics.<name>`;
- cost(options, n_layers) -> {"forwards_per_map": float, "attribution_passes_per_crop": float}: the cost table's
  and the rules' runtime estimate;
- reference, definition: where it comes from and what it computes, in a sentence (docs/metrics.md has more).

`core` (AD, IC, deletion and insertion AUC, layersweep/metrics/core.py) is always computed: figures 5-7 need it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..attribution.registry import Option, choice_option, int_option
from ..errors import LayersweepError

CORE = "core"  # the report's four metrics, computed together (layersweep/metrics/core.py); always computed
NEEDS = ("forwards", "attribution", "boxes", "masks")
DIRECTIONS = ("higher", "lower", "none")  # "none": a reference value stored beside a metric (e.g. a chance level)


@dataclass(frozen=True)
class Metric:
    name: str
    columns: dict           # column -> "higher" | "lower" | "none" (which way is better)
    needs: tuple            # subset of NEEDS
    rescaled: tuple         # the columns also scored on the rescaled maps (report section 8); () = none
    score: Callable         # score(ctx) -> {column: array (L*n,)}
    reference: str
    definition: str
    # cost(options, n_layers) -> {"forwards_per_map": float, "attribution_passes_per_crop": float}
    cost: Callable | None = None
    options: dict = field(default_factory=dict)        # name -> default
    option_checks: dict = field(default_factory=dict)  # name -> fn(value) -> bool
    option_rules: dict = field(default_factory=dict)   # name -> the check in words
    top_level_options: bool = False                    # options set as metrics.<name>, not metrics.options.<m>.<name>

    def option_key(self, option: str) -> str:
        """The config key of one of its options."""
        return f"metrics.{option}" if self.top_level_options else f"metrics.options.{self.name}.{option}"


_REGISTRY: dict[str, Metric] = {}


def float_option(default: float, lo: float, hi: float, *, open_low: bool = False) -> Option:
    def check(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and (lo < v if open_low else lo <= v) and v <= hi

    return Option(default, check, f"a number in {'(' if open_low else '['}{lo:g}, {hi:g}]")


def list_option(default: list, lo: float, hi: float) -> Option:
    def check(v):
        return (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and lo <= x <= hi for x in v))

    return Option(list(default), check, f"a non-empty list of distinct numbers in [{lo:g}, {hi:g}]")


def bool_option(default: bool) -> Option:
    return Option(default, lambda v: isinstance(v, bool), "true or false")


__all__ = ["CORE", "Metric", "all_columns", "available_metrics", "bool_option", "check_compute", "choice_option",
           "column_info", "configured_options", "float_option", "get_metric", "int_option", "list_option",
           "metric_options", "register"]


def register(name: str, *, columns: dict, needs=(), rescaled, score: Callable, reference: str,
             definition: str, cost: Callable | None = None, options: dict | None = None,
             top_level_options: bool = False) -> Metric:
    """Register a metric (module docstring). `rescaled`: True (every column), False (none) or the columns."""
    if not set(needs) <= set(NEEDS):
        raise ValueError(f"needs {tuple(needs)} of metric {name!r} are not all in {NEEDS}")
    bad = {c: d for c, d in columns.items() if d not in DIRECTIONS}
    if not columns or bad:
        raise ValueError(f"metric {name!r}: columns must map each column to one of {DIRECTIONS}, not {columns!r}")
    if name in _REGISTRY and _REGISTRY[name].score is not score:
        raise ValueError(f"metric {name!r} is registered twice")
    taken = {c: m.name for m in _REGISTRY.values() if m.name != name for c in m.columns}
    taken.update({m: m for m in _REGISTRY if m != name})  # names and columns: one namespace
    if name != CORE and (name in taken or any(c in taken for c in columns)) and CORE in _REGISTRY:
        core = _REGISTRY[CORE]
        if name == CORE or name in core.columns or any(c in core.columns or c == CORE for c in columns):
            raise ValueError(f"metric {name!r} reuses a name of the report's metrics ({CORE}: "
                             f"{', '.join(core.columns)})")
    if name in taken:
        raise ValueError(f"metric {name!r}: the name is already a column of metric {taken[name]!r}")
    clash = [c for c in columns if c in taken and c != name]
    if clash:
        raise ValueError(f"metric {name!r}: column {clash[0]!r} is already a column of metric {taken[clash[0]]!r}")
    rescaled_cols = tuple(columns) if rescaled is True else () if rescaled is False else tuple(rescaled)
    unknown = [c for c in rescaled_cols if c not in columns]
    if unknown:
        raise ValueError(f"metric {name!r}: rescaled column {unknown[0]!r} is not one of its columns")
    opts = dict(options or {})
    metric = Metric(name, dict(columns), tuple(needs), rescaled_cols, score, reference, definition, cost,
                    options={k: o.default for k, o in opts.items()},
                    option_checks={k: o.check for k, o in opts.items()},
                    option_rules={k: o.rule for k, o in opts.items()},
                    top_level_options=bool(top_level_options))
    _REGISTRY[name] = metric
    return metric


_loaded = False


def _load() -> None:
    """Import every metric file of this package once (each registers itself)."""
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil

    from .. import metrics

    for info in pkgutil.iter_modules(metrics.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_METRICS:
            importlib.import_module(f"{metrics.__name__}.{info.name}")
    _loaded = True


# the package's modules that are not a metric's file
_NOT_METRICS = {"batching", "metric_shard", "registry", "rescale", "summary"}


def available_metrics() -> list[str]:
    """core, then every other registered metric, sorted."""
    _load()
    return [CORE] + sorted(m for m in _REGISTRY if m != CORE)


def get_metric(name: str) -> Metric:
    _load()
    if name not in _REGISTRY:
        owner = [m.name for m in _REGISTRY.values() if name in m.columns]
        hint = f" ('{name}' is a column of metric '{owner[0]}': list '{owner[0]}')" if owner else ""
        raise LayersweepError(f"unknown metric {name!r} in config key 'metrics.compute'{hint}; known metrics are "
                              f"{', '.join(available_metrics())}.")
    return _REGISTRY[name]


def all_columns() -> list[str]:
    """Every column of every registered metric (core's first)."""
    _load()
    return [c for name in available_metrics() for c in _REGISTRY[name].columns]


def column_info(column: str) -> tuple[str, str]:
    """(metric name, better direction) of a summary column."""
    _load()
    for m in _REGISTRY.values():
        if column in m.columns:
            return m.name, m.columns[column]
    raise LayersweepError(f"{column!r} is not a column of any metric; known metrics are {', '.join(available_metrics())}.")


def metric_options(name: str, given: dict | None = None) -> dict:
    """The metric's options: its defaults updated by `given`, checked (errors name the option's config key).

    The key `methods` is the rules' business (which methods' maps to score), not the metric's, and is dropped.
    """
    m = get_metric(name)
    out = dict(m.options)
    for key, value in dict(given or {}).items():
        if key == "methods":
            continue
        if key not in m.options:
            known = ", ".join(sorted(m.options)) or "none"
            raise LayersweepError(f"'{m.option_key(key)}' is not an option of metric {name!r} (its options: {known}).")
        if not m.option_checks[key](value):
            raise LayersweepError(f"'{m.option_key(key)}' is {value!r}; it must be {m.option_rules[key]}.")
        out[key] = value
    return out


def configured_options(name: str, metrics_config: dict) -> dict:
    """The options of metric `name` as config key `metrics` sets them (checked): metrics.options.<name>, or, for
    a metric with top-level options (core), the keys metrics.<option>."""
    m = get_metric(name)
    if m.top_level_options:
        return metric_options(name, {k: metrics_config[k] for k in m.options if k in metrics_config})
    return metric_options(name, dict(metrics_config.get("options") or {}).get(name))


def check_compute(compute, options: dict | None, samples: str, methods=(), *, masks: bool = False) -> list[str]:
    """The metrics to compute: core (always), then those of config `metrics.compute`, checked: unknown names,
    options of metrics that do not exist, `methods` lists naming a method not in `methods` (attribution.methods),
    and metrics that need boxes in crop mode, or ground-truth masks (`masks`: the data source has them)."""
    _load()
    names = list(dict.fromkeys([CORE, *compute]))
    for name in names:
        get_metric(name)
    for name, given in dict(options or {}).items():
        if name not in _REGISTRY:
            raise LayersweepError(f"config key 'metrics.options.{name}' names no metric; known ones are "
                                  f"{', '.join(available_metrics())}.")
        if _REGISTRY[name].top_level_options:
            keys = ", ".join(f"metrics.{k}" for k in _REGISTRY[name].options)
            raise LayersweepError(f"config key 'metrics.options.{name}': the options of metric {name!r} are the keys "
                                  f"{keys}, and it scores every method.")
        metric_options(name, given)
        chosen = dict(given or {}).get("methods", "all")
        if chosen != "all":
            unknown = [m for m in chosen if m not in methods]
            if unknown:
                raise LayersweepError(f"config key 'metrics.options.{name}.methods' names '{unknown[0]}', which is not "
                                      f"in 'attribution.methods' ({', '.join(methods)}).")
    for name in names:
        if "boxes" in _REGISTRY[name].needs and samples != "images":
            raise LayersweepError(f"metric {name!r} in 'metrics.compute' needs object boxes inside the image; "
                                  f"set 'data.samples: images' (crops are the boxes themselves).")
        if "masks" in _REGISTRY[name].needs and not masks:
            raise LayersweepError(f"metric {name!r} in 'metrics.compute' needs ground-truth masks, which only "
                                  f"'data.source: shapes' has; drop it or use the shapes data.")
    return names
