"""The paper's baselines, one module each, and the registry of every method (`registry.METHODS`).

Pure functions on arrays: each detector returns ``(flagged, score)`` (see `common`).
"""

from dynacor.baselines.aum import aum, aum_from_margins, threshold_sets
from dynacor.baselines.avg_gmm import avg_gmm
from dynacor.baselines.ceiling import supervised_ceiling
from dynacor.baselines.confident_learning import (
    confident_learning,
    cross_val_probs,
    cross_val_probs_head,
    stratified_folds,
)
from dynacor.baselines.cores import cores, cores_beta, cores_sieve_terms
from dynacor.baselines.margin import margin_detector, mean_prob_margin
from dynacor.baselines.simifeat import knn_votes, simifeat

__all__ = [
    "aum", "aum_from_margins", "avg_gmm", "confident_learning", "cores", "cores_beta", "cores_sieve_terms",
    "cross_val_probs", "cross_val_probs_head", "knn_votes", "margin_detector", "mean_prob_margin", "simifeat",
    "stratified_folds", "supervised_ceiling", "threshold_sets",
]  # fmt: skip
