# The papers' set-ups: each config/studies/<name>.yaml is config.yaml with the set-up's keys on top, and runs the
# same pipeline (rules/pipeline.smk) as a module whose rules are named <name>_* (dashes as underscores) and whose
# results/, figures/, logs/ and benchmarks/ live below studies/<name>/. resources/ (VOC archives, weights) stays
# shared: the downloads are the report study's rules, so a study's own download rules are not imported.
#
# The study files are always read and checked (cheap: a bad one stops every command with one sentence), but a
# study's module, which costs as much to parse as the report study's workflow, is loaded only when the command
# asks for something below studies/ or tables/ (layersweep.studies.studies_requested).
import os
from pathlib import Path

from layersweep.studies import (check_synthetic_roots, load_studies, module_name, replace_prefix, studies_requested,
                                study_prefix)

# the project's files, wherever Snakemake runs (--directory elsewhere: the SLURM profile test); relative to the
# working directory, so that messages name them as the user sees them (config/studies/x.yaml)
PROJECT_DIR = Path(os.path.relpath(workflow.basedir))

try:
    STUDIES = load_studies(PROJECT_DIR / "config" / "studies", PROJECT_DIR / "config.yaml",
                           workflow.source_path("../config.schema.yaml"))
    check_synthetic_roots(STUDIES, DATA["voc_root"] or "resources/VOCsynthetic")
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")

LOAD_STUDIES = studies_requested(sys.argv[1:], STUDIES)

for STUDY_NAME, STUDY_CONFIG in (STUDIES.items() if LOAD_STUDIES else []):
    STUDY_MODULE = module_name(STUDY_NAME)
    STUDY_RULES = f"{STUDY_MODULE}_"

    module:
        name: STUDY_MODULE
        snakefile: "pipeline.smk"
        config: STUDY_CONFIG
        replace_prefix: replace_prefix(STUDY_NAME)

    # a study writes synthetic data only if it has its own (else its synthetic_voc would claim the report
    # study's resources/VOCsynthetic)
    if STUDY_CONFIG["data"].get("synthetic"):
        use rule * from STUDY_MODULE exclude download_voc, extract_voc, download_weights as STUDY_RULES*
    else:
        use rule * from STUDY_MODULE exclude download_voc, extract_voc, download_weights, synthetic_voc as STUDY_RULES*
