"""The record of a finished fit, so that a run killed after training resumes
at the stage after it instead of training again.

`BackupAndRestore` empties its backup when a fit ends, so without this record
a run killed during compression, evaluation or export would start training
again from epoch 1. `record_finished` keeps the trained weights (an
object-based checkpoint of the model's layers, matched by structure rather
than by the order of the weights, which freezing changes) and the
`TrainResult` in the backup folder; `restore_finished` puts them back into a
freshly built model; `discard_finished` removes them once the run finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.callbacks import unusable_backup
from kerastrain.files import atomic_path, remove
from kerastrain.training.execution import Decision
from kerastrain.training.fit import TrainResult

logger = logging.getLogger(__name__)

__all__ = [
    "record_finished",
    "finished_record",
    "restore_finished",
    "discard_finished",
]

RECORD = "trained"
WEIGHTS = "weights"
RESULT = "result.json"


def _layers(model: keras.Model) -> tf.train.Checkpoint:
    # The layers, not the model: the model would bring its optimizer along,
    # whose variables a fresh model has not created.
    return tf.train.Checkpoint(layers=list(model.layers))


def record_finished(backup_dir: str | os.PathLike, model: keras.Model, result: TrainResult) -> Path:
    """Keeps the trained weights and what training produced in `backup_dir`.

    The record is written under a temporary name and renamed, so a kill
    leaves either the whole record or none.

    Args:
        backup_dir: The run's backup folder.
        model: The trained model.
        result: What training produced.

    Returns:
        The record's folder.
    """
    folder = Path(backup_dir) / RECORD
    folder.parent.mkdir(parents=True, exist_ok=True)
    performance = {k: dataclasses.asdict(v) for k, v in result.performance.items()}
    fields = {**dataclasses.asdict(result), "performance": performance}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        _layers(model).write(str(tmp / WEIGHTS))
        (tmp / RESULT).write_text(json.dumps(fields, default=str))
    logger.info("Training finished: its weights are kept in %s until the run finishes.", folder)
    return folder


def finished_record(backup_dir: str | os.PathLike) -> Path | None:
    """The record of a finished fit in `backup_dir`, or None."""
    folder = Path(backup_dir) / RECORD
    return folder if folder.is_dir() else None


def restore_finished(folder: Path, model: keras.Model) -> TrainResult:
    """Loads a recorded fit's weights into `model` (built as the fit's was).

    Args:
        folder: The record (`finished_record`).
        model: A model built from the same options as the trained one.

    Returns:
        The recorded `TrainResult`, its stop reason saying that training was
        not run again.

    Raises:
        ConfigError: When the record is damaged or belongs to another model
            (the message names the folder and ``train.backup.resume=false``).
    """
    try:
        fields: dict[str, Any] = json.loads((folder / RESULT).read_text())
        _layers(model).read(str(folder / WEIGHTS)).assert_consumed()
        performance = {k: Decision(**v) for k, v in fields.pop("performance").items()}
        result = TrainResult(**fields, performance=performance)
    except Exception as exc:  # a damaged file raises many kinds (DataLossError, ValueError...)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise unusable_backup(
            folder,
            f"the record of the finished training is damaged or of another model "
            f"({type(exc).__name__}: {why})",
        ) from exc
    result.stop_reason += "; training had finished before the run was interrupted, not run again"
    logger.info("Resumed after training: the trained weights came back from %s.", folder)
    return result


def discard_finished(backup_dir: str | os.PathLike) -> None:
    """Removes the record once the run no longer needs it."""
    record = finished_record(backup_dir)
    if record is not None:
        remove(record)
