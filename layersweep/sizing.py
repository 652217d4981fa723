"""The memory and time each heavy job asks for (the rules' `mem_mb` and SLURM `runtime`), sized before any job
runs from the cost model (layersweep.cost) at its assumed throughput; layersweep.dagfacts computes them once per
config for the rules (rules/resources.smk), which grow them with each retry."""
from __future__ import annotations

import math

from .cost import assumed_seconds, config_facts, method_cost, metric_work

BYTES_PER_FLOAT = 4
STARTUP_MIN = 10  # loading the model and the shard, writing the output


def attribution_memory_mb(method, config: dict) -> int:
    """Peak memory of one attribution job: the model's parameters plus the rows a pass holds at once.

    gradient: `batch_size` crops with activations and gradients (~3 floats per activation);
    deeplift(0): `max_pairs` (crop, baseline) pairs with deltas and multipliers (~3 per activation);
    perturb: `perturb_batch` (else `batch_size`) rows of activations without gradients (~2 per activation).
    """
    from .attribution.registry import get_method

    method = get_method(method) if isinstance(method, str) else method
    attribution = config["attribution"]
    facts = config_facts(config)
    act_mb = facts.activation_floats * BYTES_PER_FLOAT / 1e6
    if method.pass_kind == "gradient":
        rows, per_row = attribution["batch_size"], 3 * act_mb
    elif method.pass_kind in ("deeplift", "deeplift0"):
        rows, per_row = attribution["max_pairs"], 3 * act_mb
    else:
        rows, per_row = attribution.get("perturb_batch", attribution["batch_size"]), 2 * act_mb
    params_mb = facts.parameters * BYTES_PER_FLOAT / 1e6
    return int(math.ceil(1000 + params_mb + rows * per_row))


def _runtime_min(work, config: dict, n_crops: int) -> int:
    """Twice the forecast of `n_crops` crops of `work` at the assumed throughput, plus the start-up."""
    seconds = assumed_seconds(config_facts(config), config.get("device", "cpu")).of(work)
    return int(math.ceil(STARTUP_MIN + 2 * n_crops * seconds / 60))


def attribution_runtime_min(method, config: dict, n_crops: int) -> int:
    """SLURM minutes for `n_crops` crops of one method: twice the forecast at the assumed throughput plus
    10 minutes of start-up (loading the model, the shard, writing)."""
    return _runtime_min(method_cost(method, config["attribution"], config).total, config, n_crops)


def metric_runtime_min(metric: str, options: dict, method, config: dict, n_crops: int) -> int:
    """SLURM minutes of one metric shard (`n_crops` crops of one method's maps), as `attribution_runtime_min`."""
    return _runtime_min(metric_work(metric, options, method, config), config, n_crops)
