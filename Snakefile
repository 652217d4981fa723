# layersweep: attribution maps across the layers of VGG11 on PASCAL VOC 2007.
# `snakemake --cores 8 figures/fig5.pdf` builds one figure and only what it needs.
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config.yaml"


include: "rules/pipeline.smk"

report: "report/workflow.rst"

# The network is reachable from the login node only on most clusters.
localrules: all, download_voc, extract_voc, download_weights


rule all:
    input:
        expand("figures/fig{n}.pdf", n=range(2, 8 if COMPARE else 7)),
        "figures/atlas.pdf",
        "figures/fig8.pdf" if FIG8_METRICS else [],
        "results/summary.parquet",
        "results/model/test_accuracy.json" if HEAD_TRAINING else [],
    default_target: True


# The papers' set-ups (config/studies/*.yaml), each a module below studies/<name>/, and their tables: loaded
# only for a target below studies/ or tables/ (rules/studies.smk), so the report study parses in seconds.
include: "rules/studies.smk"

if LOAD_STUDIES:

    include: "rules/tables.smk"

    # The ground-truth study (config/studies/refinecam-shapes*.yaml): its tables and figures (docs/groundtruth.md).
    include: "rules/groundtruth_tables.smk"
