"""The training stage: compile and fit a model. Tuning trials call it too.

`train_model` is the single place where kerastrain calls ``model.fit``, so a
tuning trial trains exactly as the final fit does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Sequence

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.config import EarlyStoppingConfig, TrainConfig
from kerastrain.data.validate import Task
from kerastrain.optim import make_loss, make_metrics, make_optimizer

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "compile_model", "train_model", "monitor_mode"]

MAXIMIZED = ("acc", "auc", "precision", "recall", "f1")


@dataclasses.dataclass
class TrainResult:
    """What a fit produced.

    Attributes:
        history: Each logged quantity, one value per epoch run.
        epochs_run: Epochs trained in this call.
        stop_reason: Why training stopped, in words.
        best_epoch: The epoch (1-based) whose weights the model ends with,
            when early stopping restored them.
    """

    history: dict[str, list[float]]
    epochs_run: int
    stop_reason: str
    best_epoch: int | None = None


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``"max"`` for accuracy-like quantities (acc, auc, precision, recall,
    f1), ``"min"`` otherwise, unless `mode` says which."""
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(key in name for key in MAXIMIZED) else "min"


def compile_model(model: keras.Model, task: Task, train: TrainConfig, *,
                  learning_rate: Any = None) -> None:
    """Compiles ``model`` with the optimizer, loss and metrics of ``train``.

    Call inside the strategy scope that built the model.
    """
    model.compile(optimizer=make_optimizer(train, learning_rate),
                  loss=make_loss(task, train), metrics=make_metrics(task, train))


def _early_stopping(config: EarlyStoppingConfig, has_validation: bool) -> keras.callbacks.EarlyStopping:
    monitor = config.monitor
    if not has_validation and monitor.startswith("val_"):
        logger.warning("No validation split: early stopping watches %r instead of %r.",
                       monitor[4:], monitor)
        monitor = monitor[4:]
    return keras.callbacks.EarlyStopping(
        monitor=monitor, patience=config.patience, min_delta=config.min_delta,
        mode=monitor_mode(monitor, config.mode),
        restore_best_weights=config.restore_best_weights)


def _verbose(setting: Any) -> int:
    if setting != "auto":
        return int(setting)
    return 1 if sys.stdout.isatty() else 2


def train_model(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
                train: TrainConfig, *, callbacks: Sequence[keras.callbacks.Callback] = (),
                epochs: int | None = None, initial_epoch: int = 0,
                backup_dir: str | os.PathLike | None = None, steps_per_epoch: int | None = None,
                validation_steps: int | None = None) -> TrainResult:
    """Fits a compiled model, with early stopping and crash-safe backups.

    Args:
        model: A compiled tf_keras model.
        train_ds: Batches of `(x, y)` for training.
        val_ds: Batches for validation, or None.
        train: The training options (`epochs`, `early_stopping`, `verbose`).
        callbacks: More tf_keras callbacks, run after kerastrain's own.
            Defaults to `()`.
        epochs: The epoch to stop at, replacing `train.epochs`.
            Defaults to `None`.
        initial_epoch: The epoch to start from (Hyperband's warm starts).
            Defaults to `0`.
        backup_dir: A folder for `BackupAndRestore`: a killed fit rerun with
            the same folder resumes from its last completed epoch. The folder
            is emptied when the fit completes. Defaults to `None`.
        steps_per_epoch: Steps of an epoch over repeating data (parameter-
            server training). Defaults to `None`: the data's end.
        validation_steps: Validation steps, likewise. Defaults to `None`.

    Returns:
        The history and why training stopped.

    Raises:
        ConfigError: When a callback is a Keras 3 object.
    """
    total = train.epochs if epochs is None else epochs
    own: list[keras.callbacks.Callback] = []
    if backup_dir is not None:
        own.append(keras.callbacks.BackupAndRestore(os.fspath(backup_dir)))
    stopping = None
    if train.early_stopping is not None:
        stopping = _early_stopping(train.early_stopping, val_ds is not None)
        own.append(stopping)
    for callback in callbacks:
        ensure_tf_keras(callback, "callbacks")
    history = model.fit(train_ds, validation_data=val_ds, epochs=total,
                        initial_epoch=initial_epoch, callbacks=[*own, *callbacks],
                        verbose=_verbose(train.verbose), steps_per_epoch=steps_per_epoch,
                        validation_steps=validation_steps)
    logs = {k: [float(v) for v in values] for k, values in history.history.items()}
    ran = len(next(iter(logs.values()), []))
    if stopping is not None and stopping.stopped_epoch > 0:
        best = stopping.best_epoch + 1
        reason = (f"early stopping after epoch {stopping.stopped_epoch + 1}: {stopping.monitor} "
                  f"did not improve by more than {abs(stopping.min_delta):g} for "
                  f"{stopping.patience} epochs (best {stopping.best:.4g} at epoch {best})")
    else:
        best = stopping.best_epoch + 1 if stopping is not None and stopping.best_weights is not None else None
        reason = f"completed all {total} epochs"
    if stopping is not None and stopping.restore_best_weights and best is not None:
        reason += f"; weights restored from epoch {best}"
    logger.info("Training stopped: %s.", reason)
    return TrainResult(history=logs, epochs_run=ran, stop_reason=reason, best_epoch=best)
