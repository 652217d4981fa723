"""The metric registry: the report's four metrics, and one small file per added metric in `extra/`.

The report's AD, IC, deletion and insertion AUC come from one shared scoring (rule `metrics`, `score_shard`) and
are always computed: figures 5-7 need them. Every other metric is a file in `extra/` that registers itself:

    register("road", columns={"road_morf": "lower", ...}, needs=("forwards",), rescaled=False,
             options={"percentiles": list_option(...)}, cost=..., reference="...", definition="...", score=_score)

`score(ctx)` gets a `MetricContext` (layersweep.metrics.metric_shard) and returns {column: float array (L*n,)}
in layer-major order; rows of constant maps are set to NaN by the caller. A metric listed in `metrics.compute`
gets its own shards, rule and summary, so adding one reruns nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..attribution.registry import Option, choice_option, int_option
from ..errors import LayersweepError

# the report's metrics (rule `metrics`); their direction of "better"
CORE = {"ad": "lower", "ic": "higher", "deletion_auc": "lower", "insertion_auc": "higher"}
NEEDS = ("forwards", "attribution", "boxes")
DIRECTIONS = ("higher", "lower", "none")  # "none": a reference value stored beside a metric (e.g. a chance level)


@dataclass(frozen=True)
class Metric:
    name: str
    columns: dict           # column -> "higher" | "lower" | "none" (which way is better)
    needs: tuple            # subset of NEEDS
    rescaled: bool          # depends on map values: also scored on the rescaled maps (report section 8)
    score: Callable         # score(ctx) -> {column: array (L*n,)}
    reference: str
    definition: str
    # cost(options, n_layers) -> {"forwards_per_map": float, "attribution_passes_per_crop": float}
    cost: Callable | None = None
    options: dict = field(default_factory=dict)        # name -> default
    option_checks: dict = field(default_factory=dict)  # name -> fn(value) -> bool
    option_rules: dict = field(default_factory=dict)   # name -> the check in words


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


__all__ = ["CORE", "Metric", "added_columns", "available_metrics", "column_info", "bool_option", "check_compute", "choice_option", "float_option",
           "get_metric", "int_option", "list_option", "metric_options", "register"]


def register(name: str, *, columns: dict, needs=(), rescaled: bool, score: Callable, reference: str,
             definition: str, cost: Callable | None = None, options: dict | None = None) -> Metric:
    if name in CORE or any(c in CORE for c in columns):
        raise ValueError(f"metric {name!r} reuses a name of the report's metrics {sorted(CORE)}")
    if not set(needs) <= set(NEEDS):
        raise ValueError(f"needs {tuple(needs)} of metric {name!r} are not all in {NEEDS}")
    bad = {c: d for c, d in columns.items() if d not in DIRECTIONS}
    if not columns or bad:
        raise ValueError(f"metric {name!r}: columns must map each column to one of {DIRECTIONS}, not {columns!r}")
    if name in _REGISTRY and _REGISTRY[name].score is not score:
        raise ValueError(f"metric {name!r} is registered twice")
    taken = {c: m.name for m in _REGISTRY.values() if m.name != name for c in m.columns}
    clash = [c for c in columns if c in taken]
    if clash:
        raise ValueError(f"metric {name!r}: column {clash[0]!r} is already a column of metric {taken[clash[0]]!r}")
    opts = dict(options or {})
    metric = Metric(name, dict(columns), tuple(needs), bool(rescaled), score, reference, definition, cost,
                    options={k: o.default for k, o in opts.items()},
                    option_checks={k: o.check for k, o in opts.items()},
                    option_rules={k: o.rule for k, o in opts.items()})
    _REGISTRY[name] = metric
    return metric


def _load() -> None:
    from . import extra  # noqa: F401  (importing the package registers every metric file)


def available_metrics() -> list[str]:
    """The report's four metrics, then every registered added metric, sorted."""
    _load()
    return list(CORE) + sorted(_REGISTRY)


def get_metric(name: str) -> Metric:
    _load()
    if name not in _REGISTRY:
        raise LayersweepError(f"unknown metric {name!r} in config key 'metrics.compute'; known metrics are "
                              f"{', '.join(available_metrics())}.")
    return _REGISTRY[name]


def added_columns() -> list[str]:
    """Every column of every added metric."""
    _load()
    return [c for m in _REGISTRY.values() for c in m.columns]


def column_info(column: str) -> tuple[str, str]:
    """(metric name, better direction) of a summary column: one of the report's four or an added metric's."""
    if column in CORE:
        return column, CORE[column]
    _load()
    for m in _REGISTRY.values():
        if column in m.columns:
            return m.name, m.columns[column]
    raise LayersweepError(f"{column!r} is not a column of any metric; known metrics are {', '.join(available_metrics())}.")


def metric_options(name: str, given: dict | None = None) -> dict:
    """The metric's options: its defaults updated by `given` (config `metrics.options.<name>`), checked.

    The key `methods` is the rules' business (which methods' maps to score), not the metric's, and is dropped.
    """
    m = get_metric(name)
    out = dict(m.options)
    for key, value in dict(given or {}).items():
        if key == "methods":
            continue
        if key not in m.options:
            known = ", ".join(sorted(m.options)) or "none"
            raise LayersweepError(f"'metrics.options.{name}.{key}' is not an option of metric {name!r} (its options: {known}).")
        if not m.option_checks[key](value):
            raise LayersweepError(f"'metrics.options.{name}.{key}' is {value!r}; it must be {m.option_rules[key]}.")
        out[key] = value
    return out


def check_compute(compute, options: dict | None, samples: str, methods=()) -> list[str]:
    """The added metrics of config `metrics.compute` (the report's four are always computed), checked:
    unknown names, options of metrics that do not exist, `methods` lists naming a method not in `methods`
    (attribution.methods), and metrics that need boxes in crop mode."""
    _load()
    names = list(dict.fromkeys(compute))
    for name in names:
        if name not in CORE:
            get_metric(name)
    for name in dict(options or {}):
        if name not in _REGISTRY:
            raise LayersweepError(f"config key 'metrics.options.{name}' names no added metric; known ones are "
                                  f"{', '.join(sorted(_REGISTRY))}.")
        metric_options(name, options[name])
    added = [n for n in names if n not in CORE]
    for name, given in dict(options or {}).items():
        chosen = dict(given or {}).get("methods", "all")
        if chosen != "all":
            unknown = [m for m in chosen if m not in methods]
            if unknown:
                raise LayersweepError(f"config key 'metrics.options.{name}.methods' names '{unknown[0]}', which is not "
                                      f"in 'attribution.methods' ({', '.join(methods)}).")
    for name in added:
        if "boxes" in _REGISTRY[name].needs and samples != "images":
            raise LayersweepError(f"metric {name!r} in 'metrics.compute' needs object boxes inside the image; "
                                  f"set 'data.samples: images' (crops are the boxes themselves).")
    return added
