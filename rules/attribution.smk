# One shard of evaluation crops -> maps of one method at every configured layer, in one pass per batch.


rule attribution:
    input:
        **split_files("test"),
        train_crops="results/data/train_crops.npy",
        train_index="results/data/train.parquet",
        val_crops="results/data/val_crops.npy",
        val_index="results/data/val.parquet",
        weights=weights_file(),
        **MODEL_FILES,
    output:
        "results/attributions/{method}/shard-{k}.npz",
    params:
        shard=shard_params,
        layers=ATTR["layers"],
        attribute_to=ATTR["attribute_to"],
        n_baselines=ATTR["n_baselines"],
        batch_size=ATTR["batch_size"],
        max_pairs=ATTR["max_pairs"],
        store_dtype=ATTR["store_dtype"],
        precision=ATTR["precision"],
        device=config["device"],
    log:
        log_of("attribution", "method", "k"),
    benchmark:
        bench_of("attribution", "method", "k")
    threads: 4
    resources:
        mem_mb=attribution_mem_mb,
        runtime=shard_runtime(minutes_per_crop=0.5),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/attribution.py"
