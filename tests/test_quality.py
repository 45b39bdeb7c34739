"""Quality on real data: the dev feature file (skips when ../shared/data is absent)."""

from __future__ import annotations

import pytest

from dynacor import DynaCorConfig, run
from dynacor.data.featurefile import load_features


@pytest.mark.data
def test_default_settings_find_human_label_errors(shared_data):
    """CIFAR-10N `worse` labels (40% wrong): confident learning reaches about 65-68 F1 on these
    features (docs/benchmarks.md); the defaults must stay well above it."""
    data = load_features(shared_data / "cifar10_effl0_dev.npz")
    result = run(DynaCorConfig(), data)
    assert result.metrics["f1"] > 0.75
    assert result.metrics["auroc"] > 0.88
    assert 0.3 < result.flagged.mean() < 0.5
