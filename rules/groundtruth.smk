# data.source shapes: each metric along a path of maps from the ground-truth mask to a uniform random map
# (layersweep.groundtruth.degradation_table), on the first correctly classified evaluation samples. Metrics that
# recompute the method's explanations (sensitivity, adcc) have no method to recompute here and are left out.


rule metric_degradation:
    input:
        **split_files("test"),
        masks="results/data/test_masks.npy",
        predictions="results/model/test_predictions.parquet",
        weights=weights_file(),
        **MODEL_FILES,
    output:
        "results/groundtruth/degradation.parquet",
    params:
        model=MODEL_SPEC,
        metrics=canonical({m: METRIC_OPTIONS[m] for m in COMPUTE if "attribution" not in metric(m).needs}),
        n_samples=32,
        n_steps=20,
        mask_space=METRICS["mask_space"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        seed=SEED,
        device=config["device"],
    log:
        "logs/metric_degradation/metric_degradation.log",
    benchmark:
        "benchmarks/metric_degradation/metric_degradation.tsv"
    threads: 2
    resources:
        mem_mb=scoring_mem_mb,
        runtime=grows(60),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/metric_degradation.py"
