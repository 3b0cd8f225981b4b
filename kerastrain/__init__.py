"""kerastrain: from data to a tuned, trained, compressed and verified tf_keras
model in one call.

    >>> import kerastrain
    >>> result = kerastrain.fit_pipeline("digits")  # doctest: +SKIP

Names are loaded on first use (PEP 562), so ``import kerastrain`` and the
config and error classes cost no TensorFlow import; `fit_pipeline` does.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerastrain.errors import (
    BudgetNotMet,
    CompressionError,
    ConfigError,
    DataError,
    ExportError,
    KerastrainError,
    ResourceError,
    TrainingDivergedError,
    TuningError,
    WorkerFailed,
)

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    "CompressConfig": "kerastrain.config",
    "DataConfig": "kerastrain.config",
    "DistributeConfig": "kerastrain.config",
    "ExportConfig": "kerastrain.config",
    "PipelineConfig": "kerastrain.config",
    "ReportConfig": "kerastrain.config",
    "TrackingConfig": "kerastrain.config",
    "TrainConfig": "kerastrain.config",
    "TuneConfig": "kerastrain.config",
    "load_config": "kerastrain.config",
    "register_model": "kerastrain.models",
    "PipelineResult": "kerastrain.pipeline",
    "fit_pipeline": "kerastrain.pipeline",
    "evaluate": "kerastrain.evaluation",
    "ensemble": "kerastrain.ensembling",
    "explain": "kerastrain.explanation",
    "CrossValidationResult": "kerastrain.cv",
    "cross_validate": "kerastrain.cv",
    "synthesize": "kerastrain.synthetic",
    "Synthesis": "kerastrain.synthetic",
}

__all__ = [
    "BudgetNotMet",
    "CompressionError",
    "ConfigError",
    "DataError",
    "ExportError",
    "KerastrainError",
    "TrainingDivergedError",
    "TuningError",
    "ResourceError",
    "WorkerFailed",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerastrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
