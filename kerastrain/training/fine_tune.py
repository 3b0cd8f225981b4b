"""Phase 2 of a transfer model: unfreeze the top of the backbone and train on.

The model option declares the plan (`kerastrain.models.fine_tune_plan`, a
plain `FineTunePlan`); the training stage runs it here, after phase 1, with
the same data, callbacks and `train_model` as phase 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.config import TrainConfig
from kerastrain.models.transfer import FineTunePlan, unfreeze_backbone
from kerastrain.task import Task
from kerastrain.training.fit import TrainResult, compile_model, train_model

logger = logging.getLogger(__name__)

__all__ = ["fine_tune"]


def fine_tune(
    model: keras.Model,
    plan: FineTunePlan | None,
    phase1: TrainResult,
    task: Task,
    train: TrainConfig,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    strategy: tf.distribute.Strategy,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    backup_dir: str | os.PathLike | None = None,
    fitted: Callable[[keras.Model], keras.Model] | None = None,
    **fit_options: Any,
) -> TrainResult:
    """Phase 2 of a transfer model: unfreeze the top layers and train on.

    Does nothing (returns `phase1`) without a plan, or with one that has no
    layers or no epochs.

    Args:
        model: The model phase 1 trained.
        plan: Its `FineTunePlan`, or None.
        phase1: Phase 1's `TrainResult`.
        task: The task (for the loss and metrics of the recompile).
        train: The training options.
        train_ds: Training batches.
        val_ds: Validation batches, or None.
        strategy: The strategy the model was built under.
        callbacks: Extra callbacks, as in phase 1. Defaults to `()`.
        backup_dir: Phase 1's backup folder; phase 2 uses a sub-folder.
            Defaults to `None`.
        fitted: Given the recompiled model, the model `fit` runs on, as in
            phase 1 (with `train.recompute`, its twin whose blocks recompute
            their activations, over the same variables and optimizer).
            Defaults to `None`: the model itself.
        **fit_options: More arguments of `train_model`, as phase 1 got them
            (steps per epoch under a parameter-server strategy).

    Returns:
        A `TrainResult` covering both phases.
    """
    if plan is None or not plan.active:
        return phase1
    trainable = unfreeze_backbone(model, plan.layers)
    learning_rate = train.learning_rate * plan.learning_rate_factor
    with strategy.scope():
        compile_model(model, task, train, learning_rate=learning_rate)
    logger.info(
        "Fine-tuning: %d backbone layers with weights unfrozen (BatchNorm frozen), "
        "learning rate %g, %d epochs.",
        trainable,
        learning_rate,
        plan.epochs,
    )
    start = phase1.epochs_run
    phase2 = train_model(
        model if fitted is None else fitted(model),
        train_ds,
        val_ds,
        train,
        callbacks=callbacks,
        epochs=start + plan.epochs,
        initial_epoch=start,
        backup_dir=None if backup_dir is None else Path(backup_dir) / "fine_tune",
        **fit_options,
    )
    history = {k: list(phase1.history.get(k, [])) + list(v) for k, v in phase2.history.items()}
    history["phase"] = [1.0] * phase1.epochs_run + [2.0] * phase2.epochs_run
    return TrainResult(
        history=history,
        epochs_run=phase1.epochs_run + phase2.epochs_run,
        stop_reason=(
            f"head (backbone frozen): {phase1.stop_reason}; then fine-tuning the top "
            f"{plan.layers} backbone layers at learning rate {learning_rate:g}: "
            f"{phase2.stop_reason}"
        ),
        best_epoch=phase2.best_epoch,
    )
