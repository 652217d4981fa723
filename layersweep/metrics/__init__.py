"""The scoring stage: AD, IC, deletion / insertion AUC, rescaling to a common sum, summaries with bootstrap CIs.

Plain functions on tensors (scoring, rescale) and DataFrames (summary); `score_shard` and
`score_rescaled_shard` are the stage functions the Snakemake scripts call, usable on their own.
"""
from .rescale import rescale_maps, rescale_maps_adam
from .scoring import (MASK_SPACES, average_drop, average_drop_terms, blur_images, crop_scores, curve_counts,
                      deletion_insertion, explanation_images, explanation_scores, image_scores,
                      increase_in_confidence, increase_in_confidence_terms, normalize_maps, pixel_ranks,
                      target_probs)
from .shard import read_shard, score_rescaled_shard, score_shard
from .summary import bootstrap_mean_ci, paired_difference, summarize

__all__ = [
    "MASK_SPACES", "average_drop", "average_drop_terms", "blur_images", "bootstrap_mean_ci", "crop_scores",
    "curve_counts", "deletion_insertion", "explanation_images", "explanation_scores", "image_scores",
    "increase_in_confidence", "increase_in_confidence_terms", "normalize_maps", "paired_difference",
    "pixel_ranks", "read_shard", "rescale_maps", "rescale_maps_adam", "score_rescaled_shard", "score_shard",
    "summarize", "target_probs",
]
