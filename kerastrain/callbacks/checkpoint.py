"""Checkpoints of the best and the last weights, written atomically."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras
from kerastrain.callbacks.early_stopping import monitor_mode
from kerastrain.files import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["Checkpoint"]

BEST = "best.weights.h5"
LAST = "last.weights.h5"


def _save_weights(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as tmp:  # tf_keras writes the file; the name ends in .h5
        model.save_weights(str(tmp))


class Checkpoint(keras.callbacks.Callback):
    """Keeps `best.weights.h5` (the weights of the best epoch by `monitor`)
    and `last.weights.h5` (when training ends) in `directory`.

    The best weights are copied in memory on each improvement and written at
    most every `save_every_seconds` (and when training ends), because a
    weights file costs tens of milliseconds and a small model's epoch not
    much more. Each file is written under a temporary name and renamed, so a
    crash never leaves a half-written checkpoint. A killed run resumes from
    `BackupAndRestore`'s backup; these files are what a user loads afterwards
    (``model.load_weights(".../best.weights.h5")``).

    Args:
        directory: The folder (created if needed).
        monitor: The logged quantity that decides "best".
            Defaults to `"val_loss"`.
        mode: `"min"`, `"max"` or `"auto"` (from the name). Defaults to `"auto"`.
        save_best: Write the best weights. Defaults to `True`.
        save_last: Write the last weights. Defaults to `True`.
        save_every_seconds: The shortest time between two writes of the best
            weights; 0 writes on every improvement. Defaults to `60.0`.
        temporary: Remove `directory` when training ends (a non-chief
            worker's copy, written only because saving takes part in the
            workers' collective operations). Defaults to `False`.

    Attributes:
        best: The best monitored value so far.
        best_epoch: Its epoch (0-based), or None.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best: bool = True,
        save_last: bool = True,
        save_every_seconds: float = 60.0,
        temporary: bool = False,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.save_best = save_best
        self.save_last = save_last
        self.save_every_seconds = float(save_every_seconds)
        self.temporary = temporary
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self._pending: list[Any] | None = None
        self._written = 0.0
        self._supports_tf_logs = True

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._written = time.monotonic()

    def _write_best(self) -> None:
        if self._pending is None:
            return
        current = self.model.get_weights()
        self.model.set_weights(self._pending)
        try:
            _save_weights(self.model, self.best_path)
        finally:
            self.model.set_weights(current)
        self._pending = None
        self._written = time.monotonic()

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
            self._pending = self.model.get_weights()
        if time.monotonic() - self._written >= self.save_every_seconds:
            self._write_best()

    def on_train_end(self, logs: dict | None = None) -> None:
        final = self.model.get_weights()
        same = self._pending is not None and all(
            np.array_equal(a, b) for a, b in zip(self._pending, final)
        )
        if self.save_last or same:
            _save_weights(self.model, self.last_path)
        if same:  # the model ends with the best weights: one write, one copy
            with atomic_path(self.best_path) as tmp:
                shutil.copyfile(self.last_path, tmp)
            self._pending = None
            if not self.save_last:
                self.last_path.unlink()
        self._write_best()
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
