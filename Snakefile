# layersweep: attribution maps across the layers of VGG11 on PASCAL VOC 2007.
# `snakemake --cores 8 figures/fig5.pdf` builds one figure and only what it needs.
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    split="train|val|test",
    method="|".join(METHODS),
    metric="|".join(ADDED_METRICS) or "(?!x)x",  # (?!x)x matches nothing: no added metric configured
    k=r"\d+",
    r=r"[0-9.]+",
    which="trainval|test",


include: "rules/download.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/attribution.smk"
include: "rules/metrics.smk"
include: "rules/metrics_extra.smk"
include: "rules/figures.smk"

report: "report/workflow.rst"

# The network is reachable from the login node only on most clusters.
localrules: all, download_voc, extract_voc, download_weights


rule all:
    input:
        expand("figures/fig{n}.pdf", n=range(2, 8)),
        "figures/atlas.pdf",
        "figures/fig8.pdf" if ADDED_METRICS else [],
        "results/summary.parquet",
        "results/model/test_accuracy.json" if HEAD_TRAINING else [],
    default_target: True
