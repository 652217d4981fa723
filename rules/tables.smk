# The papers' tables (config/tables.yaml) beside ours: tables/<name>.csv (+ .md, and .html for report.html),
# read from the studies' summaries; LIFT-CAM Table 2's cosine from the studies' stored channel weights.
include: "tables_common.smk"


wildcard_constraints:
    table="|".join(TABLE_SPECS),


localrules: tables


rule tables:
    input:
        expand("tables/{table}.csv", table=TABLE_SPECS),


rule table_cosine:
    input:
        lambda wc: [p for paths in cosine_shards(wc.table).values() for p in paths],
    output:
        "tables/cosine/{table}.parquet",
    params:
        shards=lambda wc: cosine_shards(wc.table),
        layers=lambda wc: TABLE_SPECS[wc.table]["layers"],
        reference=lambda wc: canonical(TABLE_SPECS[wc.table]["reference"]),
    log:
        "logs/tables/{table}-cosine.log",
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    script:
        "../scripts/table_cosine.py"


rule paper_table:
    input:
        numbers=PAPER_NUMBERS,
        summaries=lambda wc: [p for paths in summary_files(wc.table).values() for p in paths],
        cosine=lambda wc: f"tables/cosine/{wc.table}.parquet" if uses_cosine(wc.table) else [],
    output:
        csv="tables/{table}.csv",
        md="tables/{table}.md",
        html=report("tables/{table}.html", caption="../report/table.rst", category="Tables",
                    subcategory=lambda wildcards: TABLE_SPECS[wildcards.table]["paper"], labels={"table": "{table}"}),
    params:
        name=lambda wc: wc.table,
        spec=lambda wc: TABLE_SPECS[wc.table],  # in the file's row order: reordering rows reorders the table
        summary_files=lambda wc: summary_files(wc.table),
        studies=lambda wc: canonical(study_facts(wc.table)),
        study_configs=lambda wc: {s: STUDIES[s] for s in table_studies(wc.table)},  # config.yaml's key order
        study_files=lambda wc: {s: (PROJECT_DIR / "config" / "studies" / f"{s}.yaml").read_text() for s in table_studies(wc.table)},
        summary=lambda wc: {s: {**STUDIES[s]["summary"], "seed": STUDIES[s]["seed"]} for s in table_studies(wc.table)},
    log:
        "logs/tables/{table}.log",
    threads: 1
    resources:
        **SMALL_JOB,
    script:
        "../scripts/paper_table.py"


use_the_conda_env(workflow.rules)
