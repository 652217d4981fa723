# Config checks and the facts the rules read: the config validated against config.schema.yaml, then what
# the method and metric registries and model.arch say about it (layersweep.dagfacts: computed with torch once
# per config and layersweep version, then read from .snakemake/layersweep-facts/ without importing torch).
import sys
from pathlib import Path

from snakemake.utils import validate

from layersweep.config import (canonical, check_config, compare_pair, figure_methods, method_layers_key,
                               n_shards, r_label, shard_range)
from layersweep.dagfacts import workflow_facts
from layersweep.errors import LayersweepError

try:
    check_config(config, workflow.source_path("../config.schema.yaml"))
except LayersweepError as exc:
    # One sentence, not a traceback: the config is the user's file.
    sys.exit(f"layersweep: {exc}")
validate(config, "../config.schema.yaml")  # fills the schema's defaults for optional keys

DATA, MODEL, ATTR, METRICS = config["data"], config["model"], config["attribution"], config["metrics"]
SEED = config["seed"]
SPLITS = ["train", "val", "test"]

try:
    # unknown methods, metrics or options, layers a method is not defined at, a missing checkpoint entry
    FACTS = workflow_facts(config)
    FIG_METHODS = figure_methods(config)  # fig5/fig6
    COMPARE = compare_pair(config)  # fig7 and the paired differences: COMPARE[0] minus COMPARE[1]; None: neither
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")

METHODS = FACTS.methods
METHOD_OPTIONS = FACTS.method_options
COMPUTE, METRIC_OPTIONS = FACTS.compute, FACTS.metric_options
FIG8_METRICS = [m for m in COMPUTE if m != "core"]  # fig8 draws every metric but core (fig5-7 draw it)
CHECKPOINT_KEY, HEAD_TRAINING = FACTS.checkpoint_key, FACTS.head_training
HEAVY_GPU = FACTS.gpu  # `gpu` resource of the rules that use the device: 0 for cpu, and for auto where CUDA is absent
RESCALE_RS = [r_label(r) for r in config["rescale"]["r"]]
# what every rule that builds the model depends on (the fitted head adds its checkpoint file)
MODEL_SPEC = {"arch": MODEL["arch"], "source": MODEL["source"], "init": MODEL["init"], "seed": SEED}
ARCH = {"arch": MODEL["arch"], "source": MODEL["source"]}  # the layer structure alone (receptive fields)
FIGURES = config["figures"]


def method_options(method):
    """The options of one method only: a rule's params, so that changing them reruns only its shards."""
    return METHOD_OPTIONS[method]


def method_layers(method):
    """`attribution.options.<method>.layers` if given, else `attribution.layers` (checked with the facts)."""
    return method_layers_key(ATTR, method)[1]


def metric(name):
    """The registered metric's columns, needs and rescaled columns (layersweep.dagfacts.MetricFacts)."""
    return FACTS.metrics[name]


def metric_methods(name):
    """`metrics.options.<metric>.methods` if given, else every configured method."""
    chosen = METRICS["options"].get(name, {}).get("methods", "all")
    return list(METHODS) if chosen == "all" else [m for m in METHODS if m in chosen]
