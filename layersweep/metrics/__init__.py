"""The scoring stage: every metric is one file here that registers itself (`registry`); `score_metric_shard`
scores one of them on one attribution shard; `summarize` / `paired_difference` aggregate with bootstrap CIs.

- core.py: AD, IC, deletion and insertion AUC (metric `core`; `score_shard` / `score_rescaled_shard` are its
  stage with its options as keyword arguments); road.py, infidelity.py, sensitivity.py, adcc.py, add.py,
  pointing_game.py: one metric each (docs/metrics.md);
- batching.py: what every metric shares (map normalisation, batched forwards, explanation images);
- metric_shard.py: the stage (`MetricContext`, `score_metric_shard`); rescale.py: the report's rescaling;
  summary.py: means and bootstrap CIs.
"""
from .batching import (MASK_SPACES, explanation_images, explanation_scores, image_scores, normalize_maps,
                       target_probs)
from .core import (average_drop, average_drop_terms, blur_images, crop_scores, curve_counts, deletion_insertion,
                   increase_in_confidence, increase_in_confidence_terms, pixel_ranks, score_rescaled_shard,
                   score_shard)
from .metric_shard import MetricContext, score_metric_shard
from .registry import available_metrics, get_metric
from .rescale import rescale_maps
from .summary import bootstrap_mean_ci, paired_difference, summarize

__all__ = [
    "MASK_SPACES", "MetricContext", "available_metrics", "average_drop", "average_drop_terms", "blur_images",
    "bootstrap_mean_ci", "crop_scores", "curve_counts", "deletion_insertion", "explanation_images",
    "explanation_scores", "get_metric", "image_scores", "increase_in_confidence", "increase_in_confidence_terms",
    "normalize_maps", "paired_difference", "pixel_ranks", "rescale_maps", "score_metric_shard",
    "score_rescaled_shard", "score_shard", "summarize", "target_probs",
]
