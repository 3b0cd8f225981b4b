"""The history of a fit that survives a crash, so a resumed run reports every epoch."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, message
from kerastrain.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "HistoryRecorder",
    "BackupAndRestore",
    "backup_exists",
    "load_records",
    "merge_history",
    "unusable_backup",
]

FILENAME = "history.json"
MODEL_SHAPES = "model.json"
CHECKPOINTS = "chief"  # tf_keras's sub-folder of the backup folder

# Strategies tf_keras's BackupAndRestore refuses although its checkpoint works
# under them: one device holds every variable, as without a strategy.
_ALSO_SUPPORTED = (tf.distribute.OneDeviceStrategy,)


def backup_exists(backup_dir: str | os.PathLike) -> bool:
    """Whether `backup_dir` holds a checkpoint a fit would resume from."""
    folder = Path(backup_dir) / CHECKPOINTS
    return folder.is_dir() and any(folder.glob("ckpt-*"))


def unusable_backup(backup_dir: str | os.PathLike, why: str) -> ConfigError:
    """The error of a backup that cannot be resumed: it names the folder and
    the two ways on."""
    return ConfigError(
        message(
            f"The training backup in {os.fspath(backup_dir)!r} cannot be resumed: {why}",
            allowed="Set train.backup.resume=false (in the config, or "
            "fit_pipeline(train={'backup': {'resume': False}})) to train again from the start, "
            "which removes the backup; or restore the run's earlier options if they changed",
        )
    )


def load_records(path: str | os.PathLike, strict: bool = False) -> list[dict[str, Any]]:
    """The epoch records a `HistoryRecorder` left behind (none when absent).

    Args:
        path: The JSON file.
        strict: Raise on an unreadable file instead of logging a warning and
            returning none. Defaults to `False`.

    Raises:
        ConfigError: When `strict` and the file cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise ValueError(f"a JSON list was expected, not {type(records).__name__}")
    except (OSError, ValueError) as exc:
        if strict:
            raise unusable_backup(
                path.parent, f"its history {path.name} is unreadable ({exc})"
            ) from exc
        logger.warning("Ignoring an unreadable history backup %s: %s.", path, exc)
        return []
    return [r for r in records if isinstance(r, dict) and "epoch" in r]


def merge_history(
    records: Sequence[Mapping[str, Any]],
    epochs: Sequence[int],
    history: Mapping[str, Sequence[float]],
) -> dict[str, list[float]]:
    """The records of the epochs before `epochs[0]`, followed by `history`.

    Args:
        records: Epoch records of an interrupted fit (`epoch` 0-based, then
            the logs).
        epochs: The epochs (0-based) this fit ran (`History.epoch`).
        history: This fit's `History.history`.

    Returns:
        One list per logged quantity, one value per epoch, in order; a
        quantity missing from some epoch is NaN there.
    """
    first = epochs[0] if epochs else math.inf
    earlier = sorted((r for r in records if r["epoch"] < first), key=lambda r: r["epoch"])
    keys = list(history) + [k for r in earlier for k in r if k != "epoch" and k not in history]
    keys = list(dict.fromkeys(keys))
    merged: dict[str, list[float]] = {k: [float(r.get(k, math.nan)) for r in earlier] for k in keys}
    n = len(epochs)
    for key in keys:
        values = history.get(key, [math.nan] * n)
        merged[key] += [float(v) for v in values]
    return merged


class HistoryRecorder(keras.callbacks.Callback):
    """Writes each epoch's logs to `path` (atomically), and removes the file
    when training ends normally.

    `BackupAndRestore` brings back the weights and the epoch counter of a
    killed fit, but the new fit's `History` starts at the resumed epoch. With
    this file, `merge_history` puts the earlier epochs back in front. Put it
    *before* `BackupAndRestore` in the callback list, so that every backed-up
    epoch has its record.

    Args:
        path: The JSON file.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._supports_tf_logs = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.records = load_records(self.path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        entry = {"epoch": int(epoch)}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        self.records = [r for r in self.records if r["epoch"] < epoch] + [entry]
        atomic_write(self.path, json.dumps(self.records))

    def on_train_end(self, logs: dict | None = None) -> None:
        self.path.unlink(missing_ok=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """tf_keras's `BackupAndRestore`, without per-batch work when it backs up
    once per epoch, at most one epoch backup per `min_interval` seconds, a
    refusal of a backup it cannot resume, and any strategy.

    The stock callback assigns a batch-counter variable and checks for
    preemption on every batch even with ``save_freq="epoch"``; those calls
    run whenever any other callback has batch hooks (the blow-up guard has)
    and cost a small model a few percent of its speed. With epoch backups
    (and no save-before-preemption) neither is needed: tf_keras resumes from
    the epoch counter alone and reads the batch counter only for step
    backups.

    A backup writes a checkpoint of the model and the optimizer (about 40 ms
    for a small model here), as much as a fifth of a short epoch: with
    `min_interval`, an epoch ending sooner than that after the last backup
    (or the start) is not backed up. Under a multi-worker strategy every
    epoch is backed up, since the workers must save together.

    A backup that cannot be resumed (a damaged file, or one of a model whose
    weights have other shapes: the shapes are kept in ``model.json`` beside
    it) raises a `ConfigError` that names the folder and
    ``train.backup.resume=false``, rather than a raw TensorFlow error or a
    model resumed half-way. A `tf.distribute.OneDeviceStrategy` is backed
    up as a model without a strategy is; another strategy the stock
    callback does not support gets no backup, and a warning says so.

    Args:
        backup_dir: The backup folder.
        min_interval: Seconds. Defaults to `0.0` (every epoch).
        **kwargs: The stock callback's options.
    """

    def __init__(self, backup_dir: str, *, min_interval: float = 0.0, **kwargs: Any):
        super().__init__(backup_dir, **kwargs)
        self._supported_strategies = (*self._supported_strategies, *_ALSO_SUPPORTED)
        self.min_interval = min_interval
        self.active = True
        self._last_backup = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        strategy = self.model._distribution_strategy  # None without a strategy
        self.active = strategy is None or isinstance(strategy, self._supported_strategies)
        if not self.active:
            logger.warning(
                "No training backup under %s, which tf_keras's BackupAndRestore does not "
                "support: a crashed run trains again from the start (the checkpoints still "
                "keep the best and last weights).",
                type(strategy).__name__,
            )
            return
        shapes = [list(map(int, w.shape)) for w in self.model.weights]
        resumable = backup_exists(self.backup_dir)
        if resumable:
            self._check_shapes(shapes)
            if tf.train.latest_checkpoint(os.path.join(self.backup_dir, CHECKPOINTS)) is None:
                raise unusable_backup(
                    self.backup_dir, f"its index {CHECKPOINTS}/checkpoint is missing or unreadable"
                )
        try:
            super().on_train_begin(logs)
        except Exception as exc:  # what a damaged file raises varies (DataLossError, IndexError...)
            if not resumable:
                raise
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            raise unusable_backup(self.backup_dir, f"{type(exc).__name__}: {why}") from exc
        if self.model.distribute_strategy.extended.should_checkpoint:
            Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
            atomic_write(Path(self.backup_dir) / MODEL_SHAPES, json.dumps(shapes))
        self._last_backup = time.monotonic()

    def _check_shapes(self, shapes: list[list[int]]) -> None:
        path = Path(self.backup_dir) / MODEL_SHAPES
        if not path.exists():
            return  # written by an older kerastrain: TensorFlow checks what it can
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise unusable_backup(self.backup_dir, f"{MODEL_SHAPES} is unreadable ({exc})") from exc
        if saved != shapes:
            differ = next(
                (i for i, (a, b) in enumerate(zip(saved, shapes)) if a != b),
                min(len(saved), len(shapes)),
            )
            raise unusable_backup(
                self.backup_dir,
                f"it holds a different model ({len(saved)} weight tensors, this one has "
                f"{len(shapes)}; the first difference is weight {differ}: "
                f"{_shape(saved, differ)} in the backup, {_shape(shapes, differ)} now)",
            )

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.active:
            return
        super().on_train_end(logs)
        if self.delete_checkpoint:
            (Path(self.backup_dir) / MODEL_SHAPES).unlink(missing_ok=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.active:
            super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.active:
            return
        multi_worker = isinstance(
            self.model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
        )
        if (
            self.save_freq == "epoch"
            and not multi_worker
            and time.monotonic() - self._last_backup < self.min_interval
        ):
            return
        super().on_epoch_end(epoch, logs)
        self._last_backup = time.monotonic()

    def _per_batch(self) -> bool:
        return self.active and (self.save_freq != "epoch" or self.save_before_preemption)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._per_batch():
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._per_batch():
            super().on_train_batch_end(batch, logs)


def _shape(shapes: list[list[int]], index: int) -> str:
    return str(tuple(shapes[index])) if index < len(shapes) else "none"
