# Specs and input functions of the papers' tables (rules/tables.smk): config/tables.yaml checked against the
# studies (rules/studies.smk) and config/paper-numbers.csv.
from layersweep.tables import load_paper_numbers, load_table_specs



def study_module(study):
    """The namespace of a study's module (its config, FACTS, shard_ids(), ...)."""
    return globals()[module_name(study)]


PAPER_NUMBERS = PROJECT_DIR / "config" / "paper-numbers.csv"
try:
    TABLE_SPECS = load_table_specs(PROJECT_DIR / "config" / "tables.yaml", STUDIES, load_paper_numbers(PAPER_NUMBERS))
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")


def study_columns(study):
    """{column: its metric} of the metrics a study computes (core and its metrics.compute)."""
    registered = study_module(study).FACTS.metrics  # core and the study's metrics.compute, checked
    return {c: name for name, facts in registered.items() for c in facts.columns}


def study_metrics(study):
    """The columns a table can read from a study: those of the metrics it computes and, with stored weights,
    cosine."""
    cfg = STUDIES[study]
    return sorted(set(study_columns(study)) | ({"cosine"} if cfg["attribution"].get("store_weights") else set()))


def table_studies(table):
    return list(TABLE_SPECS[table]["layers"])


def uses_cosine(table):
    return "cosine" in TABLE_SPECS[table]["metrics"].values()


def summary_files(table):
    """{study: summaries to read}: results/summary/<metric>/plain.parquet of core and of each metric whose columns
    the table needs and the study computes."""
    wanted = set(TABLE_SPECS[table]["metrics"].values()) - {"cosine"}
    files = {}
    if not wanted:  # LIFT-CAM Table 2: the cosine alone, from the attribution shards
        return files
    for study in table_studies(table):
        columns = study_columns(study)
        names = sorted({columns[c] for c in wanted if c in columns} | {"core"})  # core: never an empty list
        files[study] = [f"{study_prefix(study)}results/summary/{name}/plain.parquet" for name in names]
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
