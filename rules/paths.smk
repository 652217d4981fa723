# Paths and input functions: where the data comes from, the evaluation shards, each stage's files, logs.


# ---- where the VOC tree comes from: a synthetic one, a local copy, or the downloaded archives
if DATA.get("voc_root"):
    VOC_DIR = str(Path(DATA["voc_root"]) / "VOCdevkit" / "VOC2007")
else:
    VOC_DIR = "resources/voc/VOCdevkit/VOC2007"


def voc_ready():
    if DATA["source"] == "imagenet":
        return []  # a local ILSVRC2012 copy: the crops rule checks it and names what is missing
    if DATA.get("synthetic"):
        return DATA["voc_root"]  # the synthetic_voc rule's directory
    if DATA.get("voc_root"):
        return []  # a local copy: the crops rule checks it and names what is missing
    return ["resources/voc/.extracted-trainval", "resources/voc/.extracted-test"]


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


def weights_file():
    """Pretrained weights of model.arch / model.source: a local copy, or the download; nothing for a random init."""
    if MODEL["init"] != "imagenet":
        return []
    return MODEL.get("weights") or f"resources/weights/{MODEL['checkpoints'][CHECKPOINT_KEY]['file']}"


def split_files(split):
    return {"crops": f"results/data/{split}_crops.npy", "index": f"results/data/{split}.parquet"}


TARGET = DATA["target"]  # label | top1 (the model's prediction, rules/targets.smk)


def eval_files():
    """The evaluated samples: the test crops and their index; with data.target top1 the index whose labels are the
    model's predictions (rule top1)."""
    files = split_files("test")
    if TARGET == "top1":
        files["index"] = "results/data/test-top1.parquet"
    return files


def imagenet_settings():
    """What the ImageNet data stage reads (data.source imagenet; {} for VOC): data.imagenet with its defaults, the
    root, the draw's size, the baseline splits' size, and whether the boxes are needed."""
    if DATA["source"] != "imagenet":
        return {}
    defaults = {"draw": "seeded", "seed": 0, "box_filter": None, "max_box_area": 0.5, "resize": "resize"}
    return canonical(dict(defaults, **(DATA.get("imagenet") or {}), root=DATA.get("imagenet_root"),
                          n_images=DATA["n_images"], n_baselines=ATTR["n_baselines"],
                          need_boxes="pointing_game" in COMPUTE))


def baseline_files():
    """The train and val crops: DeepLiftShap's baselines are drawn from them."""
    return {"train_crops": "results/data/train_crops.npy", "train_index": "results/data/train.parquet",
            "val_crops": "results/data/val_crops.npy", "val_index": "results/data/val.parquet"}


def model_inputs():
    """What the rules that run the model on the test crops read: the crops, DeepLiftShap's baseline crops, the
    pretrained weights and the fitted head."""
    return {**eval_files(), **baseline_files(), "weights": weights_file(), **MODEL_FILES}


# The fitted head; TorchRay's VOC model is used as it is (no head stage): the weights are the checkpoint.
MODEL_FILES = {"checkpoint": "results/model/head.pt"} if HEAD_TRAINING else {}


# ---- evaluation shards: stable crop positions, so a larger n_images only adds shards
def n_eval_images():
    n = DATA["n_images"]
    if n == "all":  # known only once the test crops exist
        import pandas as pd

        index = pd.read_parquet(checkpoints.crops.get(split="test").output.index)
        # top1 in image mode explains each image once (layersweep.targets)
        n = index["image_id"].nunique() if TARGET == "top1" and DATA["samples"] == "images" else len(index)
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


# ---- metrics
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
    inputs = {"maps": f"results/attributions/{wildcards.method}/shard-{wildcards.k}.npz", **eval_files(),
              "weights": weights_file(), **MODEL_FILES}
    if "masks" in metric(wildcards.metric).needs:  # ground-truth masks (data.source shapes)
        inputs["masks"] = "results/data/test_masks.npy"
    if "attribution" in metric(wildcards.metric).needs:
        inputs.update(baseline_files())
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


def summary_inputs(wildcards):
    """The per-image tables one summary reads: a metric's plain or rescaled-<r> scoring."""
    r = None if wildcards.scoring == "plain" else wildcards.scoring[len("rescaled-"):]
    return metric_shards(wildcards.metric, r)


# ---- figures
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

    from layersweep.data import EVAL_CANDIDATE, eval_order
    from layersweep.targets import candidates

    index = pd.read_parquet(checkpoints.crops.get(split="test").output.index)
    if TARGET == "top1":  # the rows the top1 index draws from (one per image in image mode)
        index[EVAL_CANDIDATE] = candidates(index, DATA["samples"])
    order = eval_order(index, SEED)[:n]
    where = {cid: i for i, cid in enumerate(order)}
    return sorted(where[c] for c in spec if c in where)


def atlas_shards(wildcards):
    ks = sorted({pos // DATA["shard_size"] for pos in example_positions()}) or [0]
    return [f"results/attributions/{m}/shard-{k}.npz" for m in METHODS for k in ks]
