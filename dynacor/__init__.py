"""dynacor: find wrongly labelled samples with DynaCor (CVPR 2024) and review them.

The engine is importable without the app: ``from dynacor import DynaCorConfig, run``.

Layout (each layer imports only the ones below it; the import-linter contract in pyproject.toml
holds it): ``cli`` -> ``record`` -> ``runs``, ``review`` -> ``baselines``, ``data`` -> ``method``
-> ``errors``, ``atomic``. The app (``app.py``, ``pages/``) sits on top.
"""

from dynacor.errors import (
    Cancelled,
    CorruptError,
    DynacorError,
    InputError,
    MissingError,
    RunExistsError,
)
from dynacor.method.config import DynaCorConfig
from dynacor.method.estimator import DynaCorDetector
from dynacor.method.featureset import FeatureSet
from dynacor.method.pipeline import Result, run

__all__ = [
    "Cancelled",
    "CorruptError",
    "DynaCorConfig",
    "DynaCorDetector",
    "DynacorError",
    "FeatureSet",
    "InputError",
    "MissingError",
    "Result",
    "RunExistsError",
    "run",
]
__version__ = "0.1.0"
