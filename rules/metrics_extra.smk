# The added metrics (config metrics.compute beyond the report's four; layersweep/metrics/extra/): each has its own
# shards and summary, so listing, dropping or tuning one reruns only its jobs and fig8.


rule metric_extra:
    input:
        unpack(added_metric_inputs),
    output:
        "results/metrics-extra/{metric}/{method}/shard-{k}.parquet",
    params:
        model=MODEL_SPEC,
        options=lambda wc: ADDED_METRIC_OPTIONS[wc.metric],
        attribution=added_metric_attribution,
        r=None,
        rtol=config["rescale"]["rtol"],
        mask_space=METRICS["mask_space"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        precision=METRICS["precision"],
        seed=SEED,
        device=config["device"],
    log:
        log_of("metric_extra", "metric", "method", "k"),
    benchmark:
        bench_of("metric_extra", "metric", "method", "k")
    threads: 4
    resources:
        mem_mb=scoring_mem_mb,
        runtime=added_metric_runtime,
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/metric_extra.py"


# Metrics that depend on map values (not only on their order) are scored again on the rescaled maps.
use rule metric_extra as metric_extra_rescaled with:
    output:
        "results/metrics-extra/{metric}/rescaled-{r}/{method}/shard-{k}.parquet",
    params:
        model=MODEL_SPEC,
        options=lambda wc: ADDED_METRIC_OPTIONS[wc.metric],
        attribution=added_metric_attribution,
        r=lambda wc: float(wc.r),
        rtol=config["rescale"]["rtol"],
        mask_space=METRICS["mask_space"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        precision=METRICS["precision"],
        seed=SEED,
        device=config["device"],
    log:
        log_of("metric_extra_rescaled", "metric", "r", "method", "k"),
    benchmark:
        bench_of("metric_extra_rescaled", "metric", "r", "method", "k")


rule summary_metric:
    input:
        added_metric_summary_inputs,
    output:
        "results/summary/metric-{metric}.parquet",
    params:
        columns=lambda wc: list(added_metric(wc.metric).columns),
        n_boot=config["summary"]["n_boot"],
        ci=config["summary"]["ci"],
        seed=SEED,
    log:
        "logs/summary_metric/{metric}.log",
    benchmark:
        "benchmarks/summary_metric/{metric}.tsv"
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    conda:
        ENV
    script:
        "../scripts/summary.py"
