"""A reviewed run handed to other tools: a cleanlab-style table, a FiftyOne dataset, Label Studio
tasks (and a Label Studio export read back as review decisions).

Each format is built by pure functions from the run's per-sample table and its latest review
decisions (`dynacor.review.store.ReviewStore.latest_decisions`); the writers apart from them write
atomically. FiftyOne is imported only when a FiftyOne dataset is written.
"""

from dynacor.review.exports.cleanlab_table import (
    CANDIDATE_COLUMNS,
    CLEANLAB_COLUMNS,
    cleanlab_table,
    write_table,
)
from dynacor.review.exports.common import Suggestions, class_list, images_of, suggestions_of
from dynacor.review.exports.fiftyone_dataset import (
    BRAIN_KEY,
    fiftyone_rows,
    fiftyone_unavailable,
    write_dataset,
)
from dynacor.review.exports.labelstudio import (
    CONFIG_FILE,
    FROM_NAME,
    TASKS_FILE,
    TO_NAME,
    decisions_from_export,
    image_urls,
    label_config,
    read_export,
    tasks,
)

FORMATS = ("cleanlab", "fiftyone", "labelstudio")

__all__ = [
    "BRAIN_KEY", "CANDIDATE_COLUMNS", "CLEANLAB_COLUMNS", "CONFIG_FILE", "FORMATS", "FROM_NAME", "TASKS_FILE",
    "TO_NAME", "Suggestions", "class_list", "cleanlab_table", "decisions_from_export", "fiftyone_rows", "fiftyone_unavailable",
    "image_urls", "images_of", "label_config", "read_export", "suggestions_of", "tasks", "write_dataset",
    "write_table",
]  # fmt: skip
