"""Review of flagged samples: decisions, the queue, the store that keeps them, the export.

Pure DataFrame functions (`decisions`, `queue`, `quality`, `export`) apart from the store (`store`,
SQLAlchemy).
"""

from dynacor.review.decisions import DECISIONS, LABELLED, decision_label
from dynacor.review.export import EXPORT_COLUMNS, class_names_of, final_labels, summary_per_class
from dynacor.review.quality import (
    audit_order,
    candidate_line,
    candidate_shares,
    estimated_figures,
    estimates_line,
    quality_figures,
    quality_lines,
    queue_with_audit,
    review_quality,
    wilson_interval,
)
from dynacor.review.queue import flagged_sorted, queue, sample_keys

__all__ = [
    "DECISIONS", "EXPORT_COLUMNS", "LABELLED", "class_names_of", "decision_label", "final_labels",
    "audit_order", "candidate_line", "candidate_shares", "estimated_figures", "estimates_line", "flagged_sorted", "quality_figures", "quality_lines", "queue",
    "queue_with_audit", "review_quality", "sample_keys", "summary_per_class", "wilson_interval",
]  # fmt: skip
