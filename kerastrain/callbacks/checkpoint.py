"""Checkpoints of the best and the last weights, written atomically."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from kerastrain._keras import keras
from kerastrain.callbacks.early_stopping import monitor_mode

logger = logging.getLogger(__name__)

__all__ = ["Checkpoint"]

BEST = "best.weights.h5"
LAST = "last.weights.h5"


def _save_weights(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.weights.h5")
    model.save_weights(str(tmp))
    os.replace(tmp, path)


class Checkpoint(keras.callbacks.Callback):
    """Keeps `best.weights.h5` (on each improvement of `monitor`) and
    `last.weights.h5` (when training ends) in `directory`.

    Each file is written under a temporary name and renamed, so a crash never
    leaves a half-written checkpoint. A killed run resumes from
    `BackupAndRestore`'s backup; these files are what a user loads afterwards
    (``model.load_weights(".../best.weights.h5")``).

    Args:
        directory: The folder (created if needed).
        monitor: The logged quantity that decides "best".
            Defaults to `"val_loss"`.
        mode: `"min"`, `"max"` or `"auto"` (from the name). Defaults to `"auto"`.
        save_best: Write the best weights. Defaults to `True`.
        save_last: Write the last weights. Defaults to `True`.

    Attributes:
        best: The best monitored value so far.
        best_epoch: Its epoch (0-based), or None.
    """

    def __init__(self, directory: str | os.PathLike, monitor: str = "val_loss",
                 mode: str = "auto", save_best: bool = True, save_last: bool = True):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.save_best = save_best
        self.save_last = save_last
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self._supports_tf_logs = True

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.save_best:
            return
        current = (logs or {}).get(self.monitor)
        if current is None or not math.isfinite(float(current)):
            return
        current = float(current)
        better = current < self.best if self.mode == "min" else current > self.best
        if better:
            self.best, self.best_epoch = current, epoch
            _save_weights(self.model, self.best_path)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.save_last:
            _save_weights(self.model, self.last_path)
