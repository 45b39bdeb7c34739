"""dynacor: find wrongly labelled samples with DynaCor (CVPR 2024) and review them.

The engine is importable without the app: ``from dynacor import DynaCorConfig, run``.
"""

from dynacor.config import DynaCorConfig
from dynacor.errors import (
    Cancelled,
    CorruptError,
    DynacorError,
    InputError,
    MissingError,
    RunExistsError,
)
from dynacor.estimator import DynaCorDetector
from dynacor.featureset import FeatureSet
from dynacor.pipeline import Result, run

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
