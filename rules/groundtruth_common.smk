# The ground-truth study's name, prefix and input functions, for its tables and figures
# (rules/groundtruth_tables.smk): config key groundtruth_study, checked against config/studies/.
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
