# Specs and input functions of the papers' tables (rules/tables.smk): config/tables.yaml checked against the
# studies (rules/studies.smk) and config/paper-numbers.csv.
from layersweep.tables import load_paper_numbers, load_table_specs

PAPER_NUMBERS = PROJECT_DIR / "config" / "paper-numbers.csv"
BASE_METRICS = ("ad", "ic", "deletion_auc", "insertion_auc")  # rule `metrics`, always computed
try:
    TABLE_SPECS = load_table_specs(PROJECT_DIR / "config" / "tables.yaml", STUDIES, load_paper_numbers(PAPER_NUMBERS))
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")


def study_module(study):
    """The namespace of a study's module (its config, shard_ids(), ...)."""
    return globals()[module_name(study)]


def study_metrics(study):
    """The metrics a study computes: the report's four, its metrics.compute and, with stored weights, cosine."""
    cfg = STUDIES[study]
    extra = set(cfg["metrics"].get("compute", [])) - set(BASE_METRICS)
    return sorted(set(BASE_METRICS) | extra | ({"cosine"} if cfg["attribution"].get("store_weights") else set()))


def table_studies(table):
    return list(TABLE_SPECS[table]["layers"])


def uses_cosine(table):
    return "cosine" in TABLE_SPECS[table]["metrics"].values()


def summary_files(table):
    """{study: summaries to read}: plain.parquet, and results/summary/metric-<m>.parquet of the added metrics
    the table needs and the study computes (metric registry)."""
    wanted = set(TABLE_SPECS[table]["metrics"].values()) - {"cosine"}
    files = {}
    if not wanted:  # LIFT-CAM Table 2: the cosine alone, from the attribution shards
        return files
    for study in table_studies(table):
        added = sorted((wanted - set(BASE_METRICS)) & set(study_metrics(study)))
        files[study] = [f"{study_prefix(study)}results/summary/plain.parquet"] + \
                       [f"{study_prefix(study)}results/summary/metric-{m}.parquet" for m in added]
    return files


def weight_shards(study, method):
    return [f"{study_prefix(study)}results/attributions/{method}/shard-{k}.npz"
            for k in study_module(study).shard_ids()]


def cosine_shards(table):
    """{"<study>/<method>": shards} of every row whose study runs its method, and "reference"."""
    spec = TABLE_SPECS[table]
    shards = {f"{s}/{c['method']}": weight_shards(s, c["method"]) for c in spec["rows"].values()
              for s in c["studies"] if c["method"] in STUDIES[s]["attribution"]["methods"]}
    shards["reference"] = weight_shards(spec["reference"]["study"], spec["reference"]["method"])
    return shards


def study_facts(table):
    return {s: {"model": f"{STUDIES[s]['model']['arch']} ({STUDIES[s]['model']['source']})",
                "methods": list(STUDIES[s]["attribution"]["methods"]), "metrics": study_metrics(s)}
            for s in table_studies(table)}
