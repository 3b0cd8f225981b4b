"""Training callbacks, each usable alone in ``model.fit(callbacks=[...])``.

`kerastrain.training.train_model` puts them together (see
`kerastrain.training.default_callbacks`). `Scaled` is the schedule wrapper
whose factor `BlowupGuard` lowers.
"""

from kerastrain.callbacks.checkpoint import Checkpoint
from kerastrain.callbacks.early_stopping import EarlyStopping, monitor_mode
from kerastrain.callbacks.ema import SwapEMAWeights
from kerastrain.callbacks.guard import BlowupGuard, Scaled
from kerastrain.callbacks.lr_finder import (
    LRFinder,
    LRRangeResult,
    lr_range_test,
    plot_lr_range,
    suggest_learning_rate,
)
from kerastrain.callbacks.resume import (
    BackupAndRestore,
    HistoryRecorder,
    backup_exists,
    load_records,
    merge_history,
    unusable_backup,
)
from kerastrain.callbacks.throughput import LearningRateLogger, ThroughputLogger
from kerastrain.errors import TrainingDivergedError

__all__ = [
    "Checkpoint",
    "EarlyStopping",
    "monitor_mode",
    "SwapEMAWeights",
    "BlowupGuard",
    "Scaled",
    "TrainingDivergedError",
    "LRFinder",
    "LRRangeResult",
    "lr_range_test",
    "plot_lr_range",
    "suggest_learning_rate",
    "BackupAndRestore",
    "HistoryRecorder",
    "backup_exists",
    "load_records",
    "merge_history",
    "unusable_backup",
    "LearningRateLogger",
    "ThroughputLogger",
]
