"""The in-memory data set the engine works on: one feature vector per sample plus labels.

Every data source (feature file, image folder, manifest, CIFAR, the built-in sample) ends in a
`FeatureSet`; `dynacor.method.validate.check_featureset` is the one place its contents are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FeatureSet:
    """Features and labels of N samples in D dimensions and C classes.

    Attributes
    ----------
    features : (N, D) float, one vector per sample
    labels : (N,) int64 in [0, C), the given (possibly noisy) labels
    features_aug : (N, D) float or None, a weakly augmented view (horizontal flip) used for the
        corrupted copies; without it the copies reuse ``features``
    clean_labels : (N,) int64 or None, ground truth used only to report metrics
    ids : (N,) str or int, stable sample identifiers (default: the row index)
    class_names : (C,) str
    paths : (N,) str or None, each sample's image file, for display
    test_features, test_labels : optional held-out split, for test accuracy per epoch
    source : where the data came from (file, kind, backbone, ...), saved with the run
    """

    features: np.ndarray
    labels: np.ndarray
    features_aug: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    class_names: list[str] | None = None
    paths: np.ndarray | None = None
    test_features: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        top = int(self.labels.max())
        if self.clean_labels is not None:
            top = max(top, int(self.clean_labels.max()))
        return top + 1

    def sample_ids(self) -> np.ndarray:
        return self.ids if self.ids is not None else np.arange(self.num_samples)

    def with_labels(self, labels: np.ndarray) -> FeatureSet:
        """A shallow copy with other given labels (N,)."""
        import dataclasses

        return dataclasses.replace(self, labels=np.asarray(labels, dtype=np.int64))

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The samples at ``rows`` (R,) int, in that order (the held-out test split is kept)."""
        import dataclasses

        rows = np.asarray(rows, dtype=np.int64)

        def pick(values):  # fancy indexing copies only the picked rows, also of a memory map
            return None if values is None else np.asarray(values)[rows]

        return dataclasses.replace(
            self,
            features=pick(self.features),
            labels=np.asarray(self.labels)[rows],
            features_aug=pick(self.features_aug),
            clean_labels=pick(self.clean_labels),
            ids=self.sample_ids()[rows],
            paths=pick(self.paths),
        )
