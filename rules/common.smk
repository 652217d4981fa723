# Config checks, paths, input functions and resource estimates, shared by every rules/*.smk file.
import sys
from pathlib import Path

from snakemake.utils import validate

from layersweep.config import (canonical, check_config, check_method_layers, compare_pair, figure_methods,
                               method_layers_key, n_shards, r_label, shard_range)
from layersweep.device import gpu_request
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
try:  # `gpu` resource of the rules that use the device: 0 for cpu, and for auto where CUDA is absent
    HEAVY_GPU = gpu_request(config["device"])
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")


def methods():
    from layersweep.attribution import available_methods

    known = available_methods()
    unknown = [m for m in ATTR["methods"] if m not in known]
    if unknown:
        sys.exit(f"layersweep: config key 'attribution.methods' names the unknown method '{unknown[0]}'; known methods: {', '.join(sorted(known))}.")
    return ATTR["methods"]


METHODS = methods()
try:
    FIG_METHODS = figure_methods(config)  # fig5/fig6
    COMPARE = compare_pair(config)  # fig7 and the paired differences: COMPARE[0] minus COMPARE[1]; None: neither
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")


def _checked_method_options():
    """{method: its options (defaults + config)}; a bad option, even of a method not run, exits in one sentence."""
    from layersweep.attribution import available_methods
    from layersweep.attribution.registry import method_options as resolve

    unknown = sorted(set(ATTR["options"]) - set(available_methods()))
    if unknown:
        sys.exit(f"layersweep: config key 'attribution.options.{unknown[0]}' names no known method.")
    try:
        return {m: resolve(m, ATTR["options"].get(m)) for m in sorted(set(METHODS) | set(ATTR["options"]))}
    except LayersweepError as exc:
        sys.exit(f"layersweep: {exc}")


METHOD_OPTIONS = _checked_method_options()


def method_options(method):
    """The options of one method only: a rule's params, so that changing them reruns only its shards."""
    return METHOD_OPTIONS[method]


def method_layers(method):
    """`attribution.options.<method>.layers` if given, else `attribution.layers` (checked in _model_checks)."""
    return method_layers_key(ATTR, method)[1]
RESCALE_RS = [r_label(r) for r in config["rescale"]["r"]]


def _metrics():
    """The metrics to compute (core, then metrics.compute's others), with their checked options."""
    from layersweep.metrics.registry import check_compute, configured_options

    try:
        names = check_compute(METRICS["compute"], METRICS["options"], DATA["samples"], METHODS,
                              masks=DATA["source"] == "shapes")
        return names, {m: configured_options(m, METRICS) for m in names}
    except LayersweepError as exc:
        sys.exit(f"layersweep: {exc}")


COMPUTE, METRIC_OPTIONS = _metrics()
FIG8_METRICS = [m for m in COMPUTE if m != "core"]  # fig8 draws every metric but core (fig5-7 draw it)


def metric(name):
    from layersweep.metrics.registry import get_metric

    return get_metric(name)


def metric_methods(name):
    """`metrics.options.<metric>.methods` if given, else every configured method."""
    chosen = METRICS["options"].get(name, {}).get("methods", "all")
    return list(METHODS) if chosen == "all" else [m for m in METHODS if m in chosen]


def metric_shards(name, r=None, methods=None):
    """The per-image tables of metric `name` (plain, or rescaled with r) of `methods` (default: its methods)."""
    sub = f"results/metrics/{name}" if r is None else f"results/metrics/{name}/rescaled-{r}"
    return [f"{sub}/{m}/shard-{k}.parquet" for m in (metric_methods(name) if methods is None else methods)
            for k in shard_ids()]


def metric_scorings(name):
    """plain, and rescaled-<r> per rescale.r for a metric that has rescaled columns: its summaries."""
    return ["plain"] + ([f"rescaled-{r}" for r in RESCALE_RS] if metric(name).rescaled else [])


def metric_summary(name, scoring="plain"):
    return f"results/summary/{name}/{scoring}.parquet"


def metric_inputs(wildcards):
    """The attribution shard and the crops; the baseline crops too when the metric recomputes explanations."""
    inputs = {"maps": f"results/attributions/{wildcards.method}/shard-{wildcards.k}.npz", **split_files("test"),
              "weights": weights_file(), **MODEL_FILES}
    if "masks" in metric(wildcards.metric).needs:  # ground-truth masks (data.source shapes)
        inputs["masks"] = "results/data/test_masks.npy"
    if "attribution" in metric(wildcards.metric).needs:
        inputs.update(train_crops="results/data/train_crops.npy", train_index="results/data/train.parquet",
                      val_crops="results/data/val_crops.npy", val_index="results/data/val.parquet")
    return inputs


def metric_attribution(wildcards):
    """What the method's maps depend on, for metrics that recompute them on perturbed inputs (else nothing)."""
    if "attribution" not in metric(wildcards.metric).needs:
        return {}
    keys = ("attribute_to", "n_baselines", "max_pairs", "precision", "perturb_batch")
    return dict({k: ATTR[k] for k in keys}, options=method_options(wildcards.method))


def metric_params(rescaled=False):
    """The params of the metric rules (`metric`; `metric_rescaled` adds the rescaling's r and rtol), i.e. every
    setting the metric's scores depend on, so that changing one reruns only its jobs."""
    params = dict(
        model=MODEL_SPEC,
        options=lambda wc: canonical(METRIC_OPTIONS[wc.metric]),
        attribution=metric_attribution,
        r=(lambda wc: float(wc.r)) if rescaled else None,
        mask_space=METRICS["mask_space"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        precision=METRICS["precision"],
        seed=SEED,
        device=config["device"],
    )
    if rescaled:
        params["rtol"] = config["rescale"]["rtol"]
    return params


def metric_runtime(wildcards, attempt):
    # forwards per map x layers, and attribution passes per crop, at a generous CPU rate of the crop size
    from layersweep.cost import added_metric_minutes

    return added_metric_minutes(wildcards.metric, METRIC_OPTIONS[wildcards.metric], wildcards.method, config,
                                DATA["shard_size"]) * attempt


def summary_inputs(wildcards):
    """The per-image tables one summary reads: a metric's plain or rescaled-<r> scoring."""
    r = None if wildcards.scoring == "plain" else wildcards.scoring[len("rescaled-"):]
    return metric_shards(wildcards.metric, r)

ENV = "../envs/layersweep.yaml"  # for --software-deployment-method conda; the venv has the same pins


def checkpoint_spec(file_name):
    """The entry of model.checkpoints (file, sha256_prefix, mirrors) whose file is `file_name`."""
    for key, spec in MODEL["checkpoints"].items():
        if spec["file"] == file_name:
            return dict(spec, key=key)
    raise ValueError(f"no weights file named {file_name} in config key 'model.checkpoints'")


def archive_spec(name):
    for which, spec in DATA["archives"].items():
        if spec["file"] == f"{name}.tar":
            return dict(spec, which=which)
    raise ValueError(f"no archive named {name}.tar in config key 'data.archives'")


# ---- where the VOC tree comes from: a synthetic one, a local copy, or the downloaded archives
if DATA.get("voc_root"):
    VOC_DIR = str(Path(DATA["voc_root"]) / "VOCdevkit" / "VOC2007")
else:
    VOC_DIR = "resources/voc/VOCdevkit/VOC2007"


def voc_ready():
    if DATA.get("synthetic"):
        return DATA["voc_root"]  # the synthetic_voc rule's directory
    if DATA.get("voc_root"):
        return []  # a local copy: the crops rule checks it and names what is missing
    return ["resources/voc/.extracted-trainval", "resources/voc/.extracted-test"]


def _model_checks():
    from layersweep.layers import parse_layers
    from layersweep.model import build_features, check_arch, checkpoint_key, needs_head_training

    try:
        check_arch(MODEL["arch"], MODEL["source"])
        features = build_features(MODEL["arch"], MODEL["source"])  # the layer indices and kinds of model.arch
        parse_layers(ATTR["layers"], len(features))
        parse_layers(config["figures"]["fig3_layers"], len(features), key="figures.fig3_layers")
        # each method's own layers (or attribution.layers), also of a method not run that lists its own
        for method in METHODS + sorted(m for m, o in ATTR["options"].items() if "layers" in o and m not in METHODS):
            check_method_layers(ATTR, method, features)
    except LayersweepError as exc:
        sys.exit(f"layersweep: {exc}")
    key = checkpoint_key(MODEL["arch"], MODEL["source"])
    if MODEL["init"] == "imagenet" and not MODEL.get("weights") and key not in MODEL["checkpoints"]:
        sys.exit(f"layersweep: config key 'model.checkpoints' has no entry '{key}' (file, sha256_prefix, mirrors) for model.arch '{MODEL['arch']}'; add it or set model.weights to a local copy.")
    return key, needs_head_training(MODEL["source"])


CHECKPOINT_KEY, HEAD_TRAINING = _model_checks()
# what every rule that builds the model depends on (the fitted head adds its checkpoint file)
MODEL_SPEC = {"arch": MODEL["arch"], "source": MODEL["source"], "init": MODEL["init"], "seed": SEED}
ARCH = {"arch": MODEL["arch"], "source": MODEL["source"]}  # the layer structure alone (receptive fields)


def weights_file():
    """Pretrained weights of model.arch / model.source: a local copy, or the download; nothing for a random init."""
    if MODEL["init"] != "imagenet":
        return []
    return MODEL.get("weights") or f"resources/weights/{MODEL['checkpoints'][CHECKPOINT_KEY]['file']}"


def split_files(split):
    return {"crops": f"results/data/{split}_crops.npy", "index": f"results/data/{split}.parquet"}


# The fitted head; TorchRay's VOC model is used as it is (no head stage): the weights are the checkpoint.
MODEL_FILES = {"checkpoint": "results/model/head.pt"} if HEAD_TRAINING else {}


# ---- evaluation shards: stable crop positions, so a larger n_images only adds shards
def n_eval_images():
    n = DATA["n_images"]
    if n == "all":  # known only once the test crops exist
        import pandas as pd

        n = len(pd.read_parquet(checkpoints.crops.get(split="test").output.index))
    return n


def shard_ids():
    return list(range(n_shards(n_eval_images(), DATA["shard_size"])))


def shard_params(wildcards):
    start, stop = shard_range(int(wildcards.k), n_eval_images(), DATA["shard_size"])
    return {"seed": SEED, "start": start, "stop": stop}


def log_of(rule, *wildcard_names):
    parts = "-".join(f"{{{w}}}" for w in wildcard_names) or rule
    return f"logs/{rule}/{parts}.log"


def bench_of(rule, *wildcard_names):
    parts = "-".join(f"{{{w}}}" for w in wildcard_names) or rule
    return f"benchmarks/{rule}/{parts}.tsv"


# ---- resources: sized from the shard and the crop size; grow with each retry
def _pixels_factor():
    return (DATA["crop_size"] / 224) ** 2


def attribution_mem_mb(wildcards, attempt):
    # the cost model: the model's parameters plus the rows the method's pass holds at once (layersweep.cost)
    from layersweep.cost import attribution_memory_mb

    return attribution_memory_mb(getattr(wildcards, "method", "deepliftshap"), config) * attempt


def attribution_runtime(wildcards, attempt):
    # the cost model's forecast for one shard of this method at the assumed throughput, doubled, + 10 min
    from layersweep.cost import attribution_runtime_min

    return attribution_runtime_min(wildcards.method, config, DATA["shard_size"]) * attempt


def scoring_mem_mb(wildcards, attempt):
    # one forward batch of perturbed images, no gradients: ~60 MB per image at 224 px
    return int((1500 + 60 * METRICS["batch_size"] * _pixels_factor()) * attempt)


def grows(base):
    """A fixed estimate that doubles, triples... on each retry (mem_mb or runtime of the small jobs)."""
    return lambda wildcards, attempt: base * attempt


def shard_runtime(minutes_per_crop):
    def runtime(wildcards, attempt):
        return int((10 + minutes_per_crop * DATA["shard_size"] * _pixels_factor()) * attempt)

    return runtime


# ---- figures
FIGURES = config["figures"]


def figure_outputs(n):
    return {
        "pdf": f"figures/fig{n}.pdf",
        "png": report(f"figures/fig{n}.png", caption=f"../report/fig{n}.rst", category="Figures"),
        "table": f"figures/tables/fig{n}.csv",
    }


def plot_params(**extra):
    return dict(demo=config.get("demo", False), dpi=FIGURES["dpi"], **extra)


def example_positions():
    """Evaluation positions of figures.example_crops (explicit ids outside the evaluated crops are left out
    here; the atlas script names them)."""
    spec, n = FIGURES["example_crops"], n_eval_images()
    if isinstance(spec, int):
        return list(range(min(spec, n)))
    import pandas as pd

    from layersweep.data import eval_order

    order = eval_order(pd.read_parquet(checkpoints.crops.get(split="test").output.index), SEED)[:n]
    where = {cid: i for i, cid in enumerate(order)}
    return sorted(where[c] for c in spec if c in where)


def atlas_shards(wildcards):
    ks = sorted({pos // DATA["shard_size"] for pos in example_positions()}) or [0]
    return [f"results/attributions/{m}/shard-{k}.npz" for m in METHODS for k in ks]
