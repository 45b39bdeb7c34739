"""What the baselines share: the MLP-head settings taken from a `DynaCorConfig`, and seeding.

Every detector returns ``(flagged, score)``: ``flagged`` (N,) bool, predicted noisy, and ``score``
(N,) float64, higher = more likely noisy (for AUROC). Shapes: N samples, D feature dimensions,
C classes, E classifier epochs. Randomness comes only from the ``seed`` argument.

Methods that train the MLP head (AUM, CORES, margin) use the same head and SGD settings as DynaCor
(`head_settings`), so differences come from the method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.method.config import DynaCorConfig
from dynacor.method.estimates import window_epochs


def head_settings(config: DynaCorConfig | None = None) -> dict[str, Any]:
    """The `train_head` keyword arguments of ``config`` (default: `DynaCorConfig()`)."""
    c = config if config is not None else DynaCorConfig()
    return {
        "epochs": c.epochs, "lr": c.lr, "momentum": c.momentum, "weight_decay": c.weight_decay,
        "batch_size": c.batch_size, "hidden": c.hidden, "schedule": c.schedule, "record": c.record,
        "suggest_window": window_epochs(c.suggest_window, c.epochs),
    }  # fmt: skip


def torch_generator(seed: int | np.random.SeedSequence) -> torch.Generator:
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return torch.Generator().manual_seed(int(seq.generate_state(1)[0]))

