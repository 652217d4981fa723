# Scoring: every metric (metrics.compute; core, AD / IC / deletion / insertion, always) per method and shard, on
# the plain maps and, for the metrics that read map values, on the maps rescaled per rescale.r; their summaries;
# the paired differences of fig7. Each metric has its own jobs and summaries, so listing, dropping or tuning one
# reruns only its jobs and the figures that draw it.


rule metric:
    input:
        unpack(metric_inputs),
    output:
        "results/metrics/{metric}/{method}/shard-{k}.parquet",
    params:
        **metric_params(),
    log:
        log_of("metric", "metric", "method", "k"),
    benchmark:
        bench_of("metric", "metric", "method", "k")
    threads: 4
    resources:
        mem_mb=scoring_mem_mb,
        runtime=metric_runtime,
        gpu=HEAVY_GPU,
    script:
        "../scripts/metric.py"


# The metric's rescaled columns (those that depend on map values, not only on their order) on the rescaled maps.
use rule metric as metric_rescaled with:
    output:
        "results/metrics/{metric}/rescaled-{r}/{method}/shard-{k}.parquet",
    params:
        **metric_params(rescaled=True),
    log:
        log_of("metric_rescaled", "metric", "r", "method", "k"),
    benchmark:
        bench_of("metric_rescaled", "metric", "r", "method", "k")


# The small CPU jobs below run as one SLURM job ("summaries" group) on a cluster.
rule summary_metric:
    input:
        summary_inputs,
    output:
        "results/summary/{metric}/{scoring}.parquet",
    params:
        columns=lambda wc: list(metric(wc.metric).columns),
        rescaled_columns=lambda wc: list(metric(wc.metric).rescaled),
        n_boot=config["summary"]["n_boot"],
        ci=config["summary"]["ci"],
        seed=SEED,
    log:
        "logs/summary_metric/{metric}-{scoring}.log",
    benchmark:
        "benchmarks/summary_metric/{metric}-{scoring}.tsv"
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    script:
        "../scripts/summary.py"


if COMPARE:  # figures.compare null: no fig7, no paired differences

    # Figure 7's paired differences of core's AD and IC: both methods on the same crops, plain and rescaled.
    rule paired_difference:
        input:
            plain=lambda wc: metric_shards("core", methods=COMPARE),
            rescaled=lambda wc: metric_shards("core", r=wc.r, methods=COMPARE),
        output:
            "results/summary/paired-{r}.parquet",
        params:
            n_boot=config["summary"]["n_boot"],
            ci=config["summary"]["ci"],
            seed=SEED,
            # one list, not two params: Snakemake compares the set of param values, so swapping two would go unseen
            compare=list(COMPARE),
        log:
            "logs/paired_difference/{r}.log",
        benchmark:
            "benchmarks/paired_difference/{r}.tsv"
        group:
            "summaries"
        threads: 1
        resources:
            mem_mb=grows(2000),
            runtime=grows(10),
        script:
            "../scripts/paired_difference.py"


# Every summary in one table for the user: each metric, plain and per rescale.r.
rule summary:
    input:
        [metric_summary(m, s) for m in COMPUTE for s in metric_scorings(m)],
    output:
        "results/summary.parquet",
    log:
        "logs/summary/summary.log",
    group:
        "summaries"
    threads: 1
    resources:
        **SMALL_JOB,
    script:
        "../scripts/concat_tables.py"
