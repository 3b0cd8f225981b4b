"""Typed configuration: one dataclass per section, checked when built."""

from kerastrain.config.base import Section, option
from kerastrain.config.compress import CompressConfig
from kerastrain.config.data import DataConfig
from kerastrain.config.distribute import DistributeConfig
from kerastrain.config.evaluate import EvaluateConfig
from kerastrain.config.export import ExportConfig
from kerastrain.config.pipeline import PipelineConfig, load_config, save_config
from kerastrain.config.report import ReportConfig
from kerastrain.config.tracking import TrackingConfig
from kerastrain.config.train import (
    BackupConfig,
    EarlyStoppingConfig,
    EMAConfig,
    ExecutionConfig,
    TrainConfig,
    WarmupConfig,
)
from kerastrain.config.tune import TuneConfig

__all__ = [
    "Section",
    "option",
    "CompressConfig",
    "DataConfig",
    "DistributeConfig",
    "ExportConfig",
    "EvaluateConfig",
    "PipelineConfig",
    "EarlyStoppingConfig",
    "WarmupConfig",
    "BackupConfig",
    "ExecutionConfig",
    "EMAConfig",
    "TrainConfig",
    "TuneConfig",
    "ReportConfig",
    "TrackingConfig",
    "load_config",
    "save_config",
]
