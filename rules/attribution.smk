# One shard of evaluation crops -> maps of one method at every configured layer, in one pass per batch.


rule attribution:
    input:
        **eval_files(),
        train_crops="results/data/train_crops.npy",
        train_index="results/data/train.parquet",
        val_crops="results/data/val_crops.npy",
        val_index="results/data/val.parquet",
        weights=weights_file(),
        **MODEL_FILES,
    output:
        "results/attributions/{method}/shard-{k}.npz",
    params:
        model=MODEL_SPEC,
        shard=shard_params,
        layers=lambda wc: method_layers(wc.method),
        options=lambda wc: method_options(wc.method),
        attribute_to=ATTR["attribute_to"],
        n_baselines=ATTR["n_baselines"],
        batch_size=ATTR["batch_size"],
        max_pairs=ATTR["max_pairs"],
        store_dtype=ATTR["store_dtype"],
        precision=ATTR["precision"],
        dtype=ATTR["dtype"],
        perturb_batch=ATTR["perturb_batch"],
        store_weights=ATTR["store_weights"],
        device=config["device"],
    log:
        log_of("attribution", "method", "k"),
    benchmark:
        bench_of("attribution", "method", "k")
    threads: 4
    resources:
        mem_mb=attribution_mem_mb,
        runtime=attribution_runtime,
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/attribution.py"


# What the configured study will cost, per method and layer, before running it: forward/backward equivalents
# from the layer facts (layersweep.cost) turned into seconds by a few timed passes on the configured device.
rule cost:
    input:
        index="results/data/test.parquet" if DATA["n_images"] == "all" else [],
    output:
        "results/cost.tsv",
    params:
        methods=METHODS,
        metrics=canonical(METRIC_OPTIONS),
        attribution=canonical(ATTR),
        model={"arch": MODEL.get("arch", "vgg11")},
        crop_size=DATA["crop_size"],
        n_images=DATA["n_images"],
        device=config["device"],
    log:
        "logs/cost.log",
    threads: 4
    resources:
        mem_mb=lambda wildcards, attempt: attribution_mem_mb(wildcards, attempt),
        runtime=grows(10),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/cost.py"
