# The ground-truth study's tables and figures (docs/groundtruth.md), from the study named by config key
# groundtruth_study (default refinecam-shapes-cpu, the offline one; refinecam-shapes is the paper's set-up):
# tables/refinecam-groundtruth.csv, tables/metric-agreement.csv, figures/metric-agreement.pdf,
# figures/metric-degradation.pdf and figures/refinecam.pdf. Only correctly classified test samples count.
include: "groundtruth_common.smk"


rule groundtruth_per_map:
    input:
        shards=lambda wc: [p for ps in gt_metric_shards().values() for p in ps],
        predictions=f"{GT_PREFIX}results/model/test_predictions.parquet",
    output:
        per_map="tables/groundtruth/per-map.parquet",
        counts="tables/groundtruth/counts.json",
    params:
        shards=lambda wc: gt_metric_shards(),
        columns=lambda wc: gt_columns(),
    log:
        "logs/tables/groundtruth-per-map.log",
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    conda:
        ENV
    script:
        "../scripts/groundtruth_per_map.py"


rule groundtruth_table:
    input:
        "tables/groundtruth/per-map.parquet",
    output:
        "tables/refinecam-groundtruth.csv",
    params:
        n_boot=config["summary"]["n_boot"],
        ci=config["summary"]["ci"],
        seed=SEED,
        what="groundtruth",
    log:
        "logs/tables/refinecam-groundtruth.log",
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    conda:
        ENV
    script:
        "../scripts/groundtruth_tables.py"


use rule groundtruth_table as metric_agreement_table with:
    output:
        "tables/metric-agreement.csv",
    params:
        n_boot=config["summary"]["n_boot"],
        ci=config["summary"]["ci"],
        seed=SEED,
        what="agreement",
        columns=lambda wc: gt_columns(),
    log:
        "logs/tables/metric-agreement.log",


rule figure_metric_agreement:
    input:
        "tables/metric-agreement.csv",
    output:
        pdf="figures/metric-agreement.pdf",
        png="figures/metric-agreement.png",
        table="figures/tables/metric-agreement.csv",
    params:
        study=GT_STUDY,
    log:
        "logs/figures/metric-agreement.log",
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig_metric_agreement.py"


rule figure_metric_degradation:
    input:
        f"{GT_PREFIX}results/groundtruth/degradation.parquet",
    output:
        pdf="figures/metric-degradation.pdf",
        png="figures/metric-degradation.png",
        table="figures/tables/metric-degradation.csv",
    params:
        study=GT_STUDY,
    log:
        "logs/figures/metric-degradation.log",
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig_metric_degradation.py"


rule figure_refinecam:
    input:
        table="tables/refinecam-groundtruth.csv",
        per_map="tables/groundtruth/per-map.parquet",
        shards=lambda wc: [f"{GT_PREFIX}results/attributions/{m}/shard-0.npz"
                           for m in STUDIES[GT_STUDY]["attribution"]["methods"]],
        crops=f"{GT_PREFIX}results/data/test_crops.npy",
        index=f"{GT_PREFIX}results/data/test.parquet",
        masks=f"{GT_PREFIX}results/data/test_masks.npy",
    output:
        pdf="figures/refinecam.pdf",
        png="figures/refinecam.png",
        table="figures/tables/refinecam.csv",
    params:
        study=GT_STUDY,
        n_examples=3,
    log:
        "logs/figures/refinecam.log",
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig_refinecam.py"


rule groundtruth:
    input:
        "tables/refinecam-groundtruth.csv",
        "tables/metric-agreement.csv",
        "figures/metric-agreement.pdf",
        "figures/metric-degradation.pdf",
        "figures/refinecam.pdf",
