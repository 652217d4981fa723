# Scoring: AD, IC, deletion and insertion curves per crop x layer, the rescaled AD/IC, and the summaries.


rule metrics:
    input:
        maps="results/attributions/{method}/shard-{k}.npz",
        **split_files("test"),
        weights=weights_file(),
        **MODEL_FILES,
    output:
        "results/metrics/{method}/shard-{k}.parquet",
    params:
        model=MODEL_SPEC,
        mask_space=METRICS["mask_space"],
        curve_points=METRICS["curve_points"],
        blur_kernel=METRICS["blur_kernel"],
        blur_sigma=METRICS["blur_sigma"],
        insertion_start=METRICS["insertion_start"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        precision=METRICS["precision"],
        device=config["device"],
    log:
        log_of("metrics", "method", "k"),
    benchmark:
        bench_of("metrics", "method", "k")
    threads: 4
    resources:
        mem_mb=scoring_mem_mb,
        runtime=shard_runtime(minutes_per_crop=1.0),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/metrics.py"


# Rescaling keeps the pixel order, so only AD and IC are scored again.
rule metrics_rescaled:
    input:
        maps="results/attributions/{method}/shard-{k}.npz",
        **split_files("test"),
        weights=weights_file(),
        **MODEL_FILES,
    output:
        "results/metrics/rescaled-{r}/{method}/shard-{k}.parquet",
    params:
        model=MODEL_SPEC,
        r=lambda wc: float(wc.r),
        rtol=config["rescale"]["rtol"],
        mask_space=METRICS["mask_space"],
        batch_size=METRICS["batch_size"],
        constant_eps=METRICS["constant_eps"],
        precision=METRICS["precision"],
        device=config["device"],
    log:
        log_of("metrics_rescaled", "r", "method", "k"),
    benchmark:
        bench_of("metrics_rescaled", "r", "method", "k")
    threads: 4
    resources:
        mem_mb=scoring_mem_mb,
        runtime=shard_runtime(minutes_per_crop=0.1),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/metrics_rescaled.py"


# The small CPU jobs below run as one SLURM job ("summaries" group) on a cluster.
rule summary_plain:
    input:
        lambda wc: metric_shards(METHODS),
    output:
        "results/summary/plain.parquet",
    params:
        n_boot=config["summary"]["n_boot"],
        ci=config["summary"]["ci"],
        seed=SEED,
    log:
        "logs/summary_plain/summary_plain.log",
    benchmark:
        "benchmarks/summary_plain/summary_plain.tsv"
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


use rule summary_plain as summary_rescaled with:
    input:
        lambda wc: metric_shards(METHODS, r=wc.r),
    output:
        "results/summary/rescaled-{r}.parquet",
    log:
        "logs/summary_rescaled/{r}.log",
    benchmark:
        "benchmarks/summary_rescaled/{r}.tsv"


if COMPARE:  # figures.compare null: no fig7, no paired differences

    # Figure 7's paired differences: both methods on the same crops, plain and rescaled.
    rule paired_difference:
        input:
            plain=lambda wc: metric_shards(COMPARE),
            rescaled=lambda wc: metric_shards(COMPARE, r=wc.r),
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
        conda:
            ENV
        script:
            "../scripts/paired_difference.py"


# Everything in one table for the user: plain and every configured r, and the added metrics.
rule summary:
    input:
        ["results/summary/plain.parquet"] + [f"results/summary/rescaled-{r}.parquet" for r in RESCALE_RS]
        + added_metric_summaries(),
    output:
        "results/summary.parquet",
    log:
        "logs/summary/summary.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/concat_tables.py"
