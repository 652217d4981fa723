# The ground-truth study's tables and figures (docs/groundtruth.md), from the study named by config key
# groundtruth_study (default refinecam-shapes-cpu, the offline one; refinecam-shapes is the paper's set-up):
# tables/refinecam-groundtruth.csv, tables/metric-agreement.csv, figures/metric-agreement.pdf,
# figures/metric-degradation.pdf and figures/refinecam.pdf. Only correctly classified test samples count.
GT_STUDY = config.get("groundtruth_study", "refinecam-shapes-cpu")
if GT_STUDY not in STUDIES:
    sys.exit(f"layersweep: config key 'groundtruth_study' names '{GT_STUDY}', which is not a study of "
             f"config/studies/ ({', '.join(STUDIES)}).")
if STUDIES[GT_STUDY]["data"].get("source") != "shapes" or STUDIES[GT_STUDY]["model"]["train"] != "full":
    sys.exit(f"layersweep: the study '{GT_STUDY}' of config key 'groundtruth_study' needs 'data.source: shapes' "
             f"and 'model.train: full' (its masks and test predictions).")
GT_PREFIX = study_prefix(GT_STUDY)


def gt_metric_shards():
    """{metric: its per-image tables} of every metric the study computes, every method."""
    mod = study_module(GT_STUDY)
    return {m: [GT_PREFIX + p for p in mod.metric_shards(m)] for m in mod.COMPUTE}


def gt_columns():
    """{column: direction} of the study's metric columns (their `none` reference columns left out)."""
    from layersweep.metrics.registry import get_metric

    return {c: d for m in study_module(GT_STUDY).COMPUTE for c, d in get_metric(m).columns.items() if d != "none"}


rule groundtruth_per_map:
    input:
        shards=lambda wc: [p for ps in gt_metric_shards().values() for p in ps],
        predictions=GT_PREFIX + "results/model/test_predictions.parquet",
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
        GT_PREFIX + "results/groundtruth/degradation.parquet",
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
        shards=lambda wc: [GT_PREFIX + f"results/attributions/{m}/shard-0.npz"
                           for m in STUDIES[GT_STUDY]["attribution"]["methods"]],
        crops=GT_PREFIX + "results/data/test_crops.npy",
        index=GT_PREFIX + "results/data/test.parquet",
        masks=GT_PREFIX + "results/data/test_masks.npy",
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
