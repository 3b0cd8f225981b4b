"""kerastrain: from data to a tuned, trained, compressed and verified tf_keras
model in one call.

    >>> import kerastrain
    >>> result = kerastrain.fit_pipeline("digits")  # doctest: +SKIP

Names are loaded on first use (PEP 562), so ``import kerastrain`` and the
config and error classes cost no TensorFlow import; `fit_pipeline` does.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from kerastrain.errors import ConfigError, DataError, ExportError, KerastrainError

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
    "evaluate": "kerastrain.evaluate",
    "ensemble": "kerastrain.ensemble",
    "explain": "kerastrain.explain",
    "CrossValidationResult": "kerastrain.cv",
    "cross_validate": "kerastrain.cv",
    "TuningError": "kerastrain.tune",
}

#: Functions named like the module that defines them.
_SHADOWED = frozenset(name for name, module in _LAZY.items() if module == f"{__name__}.{name}")

__all__ = ["ConfigError", "DataError", "ExportError", "KerastrainError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerastrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """Keeps ``kerastrain.evaluate`` (and ``ensemble``, ``explain``) the
    function whatever was imported first.

    Importing the submodule ``kerastrain.evaluate`` (which the pipeline does)
    makes Python set the package's attribute ``evaluate`` to the module, which
    would hide the public function of the same name. The function takes its
    place; the module stays reachable as ``sys.modules["kerastrain.evaluate"]``
    and through ``from kerastrain.evaluate import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in _SHADOWED
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
