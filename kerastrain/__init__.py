"""kerastrain: from data to a tuned, trained, compressed and verified tf_keras
model in one call.

    >>> import kerastrain
    >>> result = kerastrain.fit_pipeline("digits")  # doctest: +SKIP
"""

from kerastrain.config import DataConfig, ExportConfig, PipelineConfig, TrainConfig, load_config
from kerastrain.errors import ConfigError, DataError, ExportError, KerastrainError
from kerastrain.models import register_model
from kerastrain.pipeline import PipelineResult, fit_pipeline

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataConfig", "DataError", "ExportConfig", "ExportError", "KerastrainError",
    "PipelineConfig", "PipelineResult", "TrainConfig", "fit_pipeline", "load_config",
    "register_model",
]
