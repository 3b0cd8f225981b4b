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
from kerastrain.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["HistoryRecorder", "BackupAndRestore", "load_records", "merge_history"]

FILENAME = "history.json"


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records a `HistoryRecorder` left behind (none when absent)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
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
    once per epoch, and at most one epoch backup per `min_interval` seconds.

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
    epoch is backed up, since the workers must save together. Everything
    else is the stock callback.

    Args:
        backup_dir: The backup folder.
        min_interval: Seconds. Defaults to `0.0` (every epoch).
        **kwargs: The stock callback's options.
    """

    def __init__(self, backup_dir: str, *, min_interval: float = 0.0, **kwargs: Any):
        super().__init__(backup_dir, **kwargs)
        self.min_interval = min_interval
        self._last_backup = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._last_backup = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
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
        return self.save_freq != "epoch" or self.save_before_preemption

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._per_batch():
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._per_batch():
            super().on_train_batch_end(batch, logs)
