# The papers' set-ups: each config/studies/<name>.yaml is config.yaml with the set-up's keys on top, and runs the
# same pipeline (rules/pipeline.smk) as a module whose rules are named <name>_* (dashes as underscores) and whose
# results/, figures/, logs/ and benchmarks/ live below studies/<name>/. resources/ (VOC archives, weights) stays
# shared: the downloads are the report study's rules, so a study's own download rules are not imported.
from layersweep.studies import load_studies, module_name, replace_prefix, study_prefix

try:
    STUDIES = load_studies("config/studies", "config.yaml", workflow.source_path("../config.schema.yaml"))
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")

for STUDY_NAME, STUDY_CONFIG in STUDIES.items():
    STUDY_MODULE = module_name(STUDY_NAME)
    STUDY_RULES = f"{STUDY_MODULE}_"

    module:
        name: STUDY_MODULE
        snakefile: "pipeline.smk"
        config: STUDY_CONFIG
        replace_prefix: replace_prefix(STUDY_NAME)

    use rule * from STUDY_MODULE exclude download_voc, extract_voc, download_weights as STUDY_RULES*
