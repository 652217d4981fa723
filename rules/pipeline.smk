# The pipeline of one study: config checks, wildcard constraints and every stage's rules. The Snakefile includes
# it for the report's study (today's paths), and rules/studies.smk loads it once per config/studies/*.yaml as a
# module (its own config, its outputs below studies/<name>/).


include: "common.smk"


wildcard_constraints:
    split="train|val|test",
    method="|".join(METHODS),
    metric="|".join(COMPUTE),
    scoring=r"plain|rescaled-[0-9.]+",
    k=r"\d+",
    r=r"[0-9.]+",
    which="trainval|test",


include: "download.smk"
include: "data.smk"
include: "targets.smk"
include: "model.smk"
include: "attribution.smk"
include: "metrics.smk"
include: "figures.smk"
