# The network of model.arch with a 20-class head: cache the frozen features once, then fit the head on them in
# seconds. Only for model.source torchvision: TorchRay's VOC model has its own classifier (MODEL_FILES is empty).


rule frozen_features:
    input:
        unpack(lambda wc: split_files(wc.split)),
        weights=weights_file(),
    output:
        "results/model/features-{train}_{split}.npy",
    params:
        model=MODEL_SPEC,
        batch_size=MODEL.get("feature_batch_size", 64),
        device=config["device"],
    log:
        log_of("frozen_features", "train", "split"),
    benchmark:
        bench_of("frozen_features", "train", "split")
    threads: 4
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
        gpu=HEAVY_GPU,
    wildcard_constraints:
        train="head|classifier",
    conda:
        ENV
    script:
        "../scripts/frozen_features.py"


rule train_head:
    input:
        features=expand("results/model/features-{train}_{split}.npy", train=MODEL["train"], split=SPLITS),
        index=expand("results/data/{split}.parquet", split=SPLITS),
        weights=weights_file(),
    output:
        checkpoint="results/model/head.pt",
        history="results/model/history.parquet",
        accuracy="results/model/test_accuracy.json",
    params:
        model=MODEL_SPEC,
        train=MODEL["train"],
        lr=MODEL["lr"],
        batch_size=MODEL["batch_size"],
        max_epochs=MODEL["max_epochs"],
        patience=MODEL["patience"],
        device=config["device"],
    log:
        "logs/train_head/train_head.log",
    benchmark:
        "benchmarks/train_head/train_head.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/train_head.py"
