# data.target top1: the model's prediction on each evaluated, unperturbed sample, computed once before the
# attribution stage and stored in a copy of the test index that every later stage reads (eval_files()).


rule top1:
    input:
        **split_files("test"),
        weights=weights_file(),
        **MODEL_FILES,
    output:
        index="results/data/test-top1.parquet",
    params:
        model=MODEL_SPEC,
        samples=DATA["samples"],
        n_images=DATA["n_images"],
        seed=SEED,
        batch_size=MODEL.get("feature_batch_size", 64),  # plain forwards, as the cached features are
        device=config["device"],
    log:
        "logs/top1/top1.log",
    benchmark:
        "benchmarks/top1/top1.tsv"
    threads: 4
    resources:
        mem_mb=grows(4000),  # as frozen_features: one batch of plain forwards
        runtime=grows(30),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/top1.py"
