"""A scikit-learn-style face on the engine: ``DynaCorDetector(gamma=0.1).fit(X, y).flagged_``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.method.pipeline import Result, run

_FIELDS = tuple(f.name for f in dataclasses.fields(DynaCorConfig) if f.name != "extra")


class DynaCorDetector:
    """Noisy-label detector. ``__init__`` only stores parameters (any `DynaCorConfig` field).

    Attributes after `fit`
    ----------------------
    flagged_ : (N,) bool, predicted noisy
    scores_ : (N,) float, q_noisy (higher = more likely noisy)
    suggested_labels_ : (N,) int, the most likely class other than the given one, read early in
        training (`dynacor.method.suggest`)
    candidates_ : (N, K) int, the K most likely other classes, most likely first
    result_ : the full `dynacor.method.pipeline.Result`
    """

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(_FIELDS))
        if unknown:
            raise TypeError(f"unknown parameter(s) {unknown}; expected DynaCorConfig fields {list(_FIELDS)}")
        self._params = dict(params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {**DynaCorConfig().to_dict(), **self._params} if deep else dict(self._params)

    def set_params(self, **params: Any) -> DynaCorDetector:
        self.__init__(**{**self._params, **params})
        return self

    def fit(self, X, y, X_aug=None, clean_labels=None, on_event=None) -> DynaCorDetector:
        """Run DynaCor on features ``X`` (N, D) with given labels ``y`` (N,).

        ``X_aug`` (N, D) are features of a weakly augmented view for the corrupted copies;
        ``clean_labels`` (N,) are only used to report ``result_.metrics``.
        """
        data = FeatureSet(features=np.asarray(X), labels=np.asarray(y), features_aug=X_aug, clean_labels=clean_labels)
        result: Result = run(DynaCorConfig(**self._params), data, on_event=on_event)
        self.result_ = result
        self.flagged_ = result.flagged
        self.scores_ = result.q_noisy
        self.suggested_labels_ = result.suggested_labels
        self.candidates_ = result.candidates
        return self

    def fit_predict(self, X, y, **kwargs) -> np.ndarray:
        """Fit and return ``flagged_`` (N,) bool."""
        return self.fit(X, y, **kwargs).flagged_
