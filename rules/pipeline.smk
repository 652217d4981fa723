# The pipeline of one study: config checks, paths, resources, wildcard constraints and every stage's rules. The Snakefile includes
# it for the report's study (today's paths), and rules/studies.smk loads it once per config/studies/*.yaml as a
# module (its own config, its outputs below studies/<name>/).


include: "checks.smk"
include: "paths.smk"
include: "resources.smk"


wildcard_constraints:
    split="train|val|test",
    method="|".join(METHODS),
    metric="|".join(COMPUTE),
    scoring=r"plain|rescaled-[0-9.]+",
    k=r"\d+",
    r=r"[0-9.]+",
    which="trainval|test",


include: "download.smk"
# data.source shapes: the ground-truth shapes dataset in place of VOC's crops; model.train full: the whole VGG
# trained on the crops in place of the head on cached features
if DATA["source"] == "shapes":

    include: "shapes.smk"
    include: "groundtruth.smk"

else:

    include: "data.smk"


include: "targets.smk"

if MODEL["train"] == "full":

    include: "finetune.smk"

else:

    include: "model.smk"


include: "attribution.smk"
include: "metrics.smk"
include: "figures.smk"

use_the_conda_env(workflow.rules)
