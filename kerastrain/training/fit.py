"""Compile and fit a model: the one ``model.fit`` of kerastrain.

`train_model` is the single place where kerastrain calls ``model.fit``, so a
tuning trial trains exactly as the final fit does. The callbacks it adds by
default (`default_callbacks`) log the learning rate and throughput, guard
against a NaN loss, back the run up for resuming, stop early with a stated
reason, and keep the best and last weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kerastrain import callbacks as kcb
from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.callbacks.early_stopping import MAXIMIZED, monitor_mode
from kerastrain.callbacks.guard import schedule_of
from kerastrain.config import TrainConfig
from kerastrain.errors import ConfigError, TrainingDivergedError, message
from kerastrain.files import atomic_write
from kerastrain.logs import log_once
from kerastrain.task import Task
from kerastrain.training.adaptive_augment import AdaptiveAugmentation
from kerastrain.training.execution import Decision, configure_execution
from kerastrain.training.losses import make_loss, make_metrics
from kerastrain.training.optimizers import accumulate_gradients, make_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "compile_model",
    "compile_options",
    "default_callbacks",
    "train_model",
    "monitor_mode",
    "find_learning_rate",
    "MAXIMIZED",
]

HISTORY_BACKUP = "history.json"
LR_FINDER_JSON = "lr_finder.json"
LR_FINDER_PNG = "lr_finder.png"


@dataclasses.dataclass
class TrainResult:
    """What a fit produced.

    Attributes:
        history: Each logged quantity, one value per epoch, including the
            epochs of an interrupted fit that this one resumed.
        epochs_run: Epochs in `history`.
        stop_reason: Why training stopped, in words.
        best_epoch: The epoch (1-based) whose weights the model ends with,
            when early stopping restored them.
        resumed_at: The epoch (1-based) a resumed fit started from, or None.
        recoveries: The blow-up guard's recoveries (epoch, batch, loss,
            learning rate before and after).
        performance: How each `"auto"` speed option was resolved, and why.
        memory_plan: The memory plan checked before training
            (`kerastrain.training.memory.MemoryPlan.as_dict()`: bytes per
            device), or None when none was made.
    """

    history: dict[str, list[float]]
    epochs_run: int
    stop_reason: str
    best_epoch: int | None = None
    resumed_at: int | None = None
    recoveries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    performance: dict[str, Decision] = dataclasses.field(default_factory=dict)
    memory_plan: dict[str, Any] | None = None


def compile_options(train: TrainConfig) -> dict[str, Any]:
    """The `model.compile` options for speed: `train.execution`'s `jit_compile`
    and `steps_per_execution`.

    An `"auto"` value compiles as off / 1 and is resolved by `train_model`
    before fitting, once the data and the callbacks are known
    (`execution.configure_execution`).
    """
    jit, steps = train.execution.jit_compile, train.execution.steps_per_execution
    return {
        "jit_compile": False if jit == "auto" else bool(jit),
        "steps_per_execution": 1 if steps == "auto" else int(steps),
    }


def compile_model(
    model: keras.Model,
    task: Task,
    train: TrainConfig,
    *,
    learning_rate: Any = None,
    steps_per_epoch: int | None = None,
) -> None:
    """Compiles ``model`` with the optimizer, loss and metrics of ``train``.

    Call inside the strategy scope that built the model. With
    `train.gradient_accumulation > 1` the model's training step splits each
    batch into that many micro-batches (see `optimizers.accumulate_gradients`).

    Args:
        model: A tf_keras model.
        task: The task (loss and metrics).
        train: The training options.
        learning_rate: A float or schedule used as is instead of `train`'s
            rate and schedule. Defaults to `None`.
        steps_per_epoch: Optimizer steps per epoch, to turn a schedule given in
            epochs into steps. Defaults to `None` (enough for a constant rate).
    """
    model.compile(
        optimizer=make_optimizer(train, learning_rate, steps_per_epoch=steps_per_epoch),
        loss=make_loss(task, train),
        metrics=make_metrics(task, train),
        **compile_options(train),
    )
    accumulate_gradients(model, train.gradient_accumulation)


def _monitor(name: str, has_validation: bool, what: str) -> str:
    if not has_validation and name.startswith("val_"):
        log_once(
            logger,
            logging.WARNING,
            "No validation split: %s watches %r instead of %r.",
            what,
            name[4:],
            name,
        )
        return name[4:]
    return name


def default_callbacks(
    train: TrainConfig,
    *,
    has_validation: bool,
    run_dir: str | os.PathLike | None = None,
    backup_dir: str | os.PathLike | None = None,
    examples_per_epoch: int | None = None,
    chief: bool = True,
) -> list[keras.callbacks.Callback]:
    """The callbacks `train_model` adds, in the order they must run.

    The blow-up guard, the history backup and `BackupAndRestore` come before
    `SwapEMAWeights`, so they keep the raw weights; early stopping and the
    checkpoints come after it, so they judge and keep the averaged weights.

    Args:
        train: The training options.
        has_validation: Whether the fit has validation data (monitors named
            `val_*` fall back to the training quantity otherwise).
        run_dir: Folder for checkpoints and TensorBoard logs. Defaults to
            `None` (neither is written).
        backup_dir: Folder of the `BackupAndRestore` backup. Defaults to `None`.
        examples_per_epoch: Training examples per epoch, for throughput.
            Defaults to `None`.
        chief: Whether this process writes the run's files. The other
            workers of a multi-worker run save their checkpoints to a
            temporary folder instead (saving reads variables through
            collective operations every worker must join) and skip the history
            backup; TensorBoard redirects them itself. Defaults to `True`.

    Returns:
        The callbacks.
    """
    own: list[keras.callbacks.Callback] = [
        kcb.LearningRateLogger(),
        kcb.ThroughputLogger(examples_per_epoch),
    ]
    if train.blowup_guard is not None:
        own.append(kcb.BlowupGuard(train.blowup_guard.retries, train.blowup_guard.lr_factor))
    if train.schedule == "plateau":
        opts: Any = train.schedule_options
        monitor = _monitor(opts.monitor, has_validation, "ReduceLROnPlateau")
        own.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=opts.factor,
                patience=opts.patience,
                min_delta=opts.min_delta,
                cooldown=opts.cooldown,
                min_lr=opts.min_learning_rate,
                mode=monitor_mode(monitor, opts.mode),
                verbose=0,
            )
        )
    if backup_dir is not None:
        if chief:
            own.append(kcb.HistoryRecorder(Path(backup_dir) / HISTORY_BACKUP))
        own.append(
            kcb.BackupAndRestore(
                os.fspath(backup_dir),
                save_freq=train.backup.frequency,
                min_interval=train.backup.interval,
            )
        )
    if train.ema is not None:
        own.append(kcb.SwapEMAWeights())
    stopping = train.early_stopping
    if stopping is not None:
        monitor = _monitor(stopping.monitor, has_validation, "early stopping")
        own.append(
            kcb.EarlyStopping(
                monitor,
                stopping.patience,
                stopping.min_delta,
                monitor_mode(monitor, stopping.mode),
                stopping.restore_best_weights,
                baseline=stopping.baseline,
            )
        )
    if run_dir is not None and train.checkpoints:
        watched = stopping.monitor if stopping is not None else "val_loss"
        monitor = _monitor(watched, has_validation, "the best checkpoint")
        mode = monitor_mode(monitor, stopping.mode if stopping is not None else "auto")
        folder = (
            Path(run_dir) / "checkpoints"
            if chief
            else Path(tempfile.mkdtemp(prefix="kerastrain-checkpoints-"))
        )
        own.append(kcb.Checkpoint(folder, monitor, mode, temporary=not chief))
    if run_dir is not None and train.tensorboard:
        own.append(
            keras.callbacks.TensorBoard(
                os.fspath(Path(run_dir) / "tensorboard"),
                histogram_freq=0,
                write_graph=False,
                update_freq="epoch",
                profile_batch=0,
            )
        )
    return own


def _verbose(setting: Any) -> int:
    if setting != "auto":
        return int(setting)
    return 1 if sys.stdout.isatty() else 2


def _refuse_plateau_with_schedule(
    model: keras.Model, callbacks: Sequence[Any], train: TrainConfig
) -> None:
    plateau = train.schedule == "plateau" or any(
        isinstance(cb, keras.callbacks.ReduceLROnPlateau) for cb in callbacks
    )
    schedule = schedule_of(model.optimizer)
    if plateau and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        raise ConfigError(
            message(
                "ReduceLROnPlateau cannot be combined with a schedule object: the optimizer's "
                f"learning rate is a {type(schedule).__name__}, which it cannot set",
                received={"train.schedule": train.schedule},
                allowed="Compile with a float learning rate (no schedule, no warmup), or drop "
                "ReduceLROnPlateau",
            )
        )


def _summary(
    stopping: kcb.EarlyStopping | None,
    guard: kcb.BlowupGuard | None,
    epochs: Sequence[int],
    total: int,
    resumed_at: int | None,
    first: int = 0,
) -> str:
    # Epochs count from this fit's first one: a fine-tuning phase counts its own.
    if stopping is not None:
        reason = stopping.summary(total - first, first=first)
    elif epochs and epochs[-1] + 1 < total:
        reason = f"stopped by a callback after epoch {epochs[-1] + 1 - first} of {total - first}"
    else:
        reason = f"completed all {total - first} epochs"
    if resumed_at is not None:
        reason += f"; resumed at epoch {resumed_at} from the backup"
    if guard is not None and guard.recoveries:
        last = guard.recoveries[-1]
        reason += (
            f"; recovered from {len(guard.recoveries)} non-finite loss(es), learning rate "
            f"lowered to {last['lr_after']:.3g}"
        )
    return reason


def _refuse_untrained(
    model: keras.Model, guard: kcb.BlowupGuard, data: tf.data.Dataset, where: str
) -> None:
    """Raises when a fit the blow-up guard recovered ends no better than it began.

    The model's loss on `data` (the validation data, else the training
    data) with its final weights is compared with that of the weights the
    fit began with: a recovery that only got back to the start (or to
    something worse) leaves a model that has not trained.
    """
    if guard.initial_weights is None or isinstance(
        model.distribute_strategy, tf.distribute.experimental.ParameterServerStrategy
    ):  # parameter servers: the data is a per-worker dataset, not evaluated here
        return
    final = model.get_weights()
    try:
        model.set_weights(guard.initial_weights)
        before = float(model.evaluate(data, verbose=0, return_dict=True)["loss"])
    finally:
        model.set_weights(final)
    after = float(model.evaluate(data, verbose=0, return_dict=True)["loss"])
    if math.isfinite(after) and after < before:
        return
    first, last = guard.recoveries[0], guard.recoveries[-1]
    raise TrainingDivergedError(
        message(
            f"Training diverged: after {len(guard.recoveries)} recoveries (each restored the "
            f"last good weights and lowered the learning rate, from {first['lr_before']:.3g} to "
            f"{last['lr_after']:.3g}), the model's {where} loss is {after:.4g}, no lower than "
            f"{before:.4g} with the weights it started from; the recovered model is no better "
            "than an untrained one",
            received={"train.learning_rate": first["lr_before"]},
            allowed="Lower train.learning_rate, add train.clipnorm or warmup, or look for "
            "extreme values in the data",
        )
    )


def train_model(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    train: TrainConfig,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    initial_epoch: int = 0,
    backup_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    examples_per_epoch: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    step_seconds: float | None = None,
    augment: AdaptiveAugmentation | None = None,
) -> TrainResult:
    """Fits a compiled model with kerastrain's callbacks.

    Args:
        model: A compiled tf_keras model (see `compile_model`).
        train_ds: Batches of `(x, y)` for training.
        val_ds: Batches for validation, or None.
        train: The training options.
        callbacks: More tf_keras callbacks, run after kerastrain's own.
            Defaults to `()`.
        epochs: The epoch to stop at, replacing `train.epochs`.
            Defaults to `None`.
        initial_epoch: The epoch to start from (Hyperband's warm starts).
            Defaults to `0`.
        backup_dir: A folder for `BackupAndRestore`: a killed fit rerun with
            the same folder resumes from its last backup (unless
            `train.backup.resume` is False, which empties the folder first), and its
            history keeps the epochs run before the crash. Emptied when the
            fit completes. Defaults to `None`.
        run_dir: The folder for checkpoints and TensorBoard logs. Defaults to
            the parent of `backup_dir`, or none.
        examples_per_epoch: Training examples per epoch, for the
            `examples_per_second` log. Defaults to `None`.
        steps_per_epoch: Steps of an epoch over repeating data (parameter-
            server training). Defaults to `None`: the data's end.
        validation_steps: Validation steps, likewise. Defaults to `None`.
        step_seconds: One step of this model on this data, already measured
            (for `steps_per_execution="auto"`). Defaults to `None`: measured
            here when needed.
        augment: The adaptive augmentation's callback: it runs first (so the
            history backup records `augment_magnitude`), and a resumed fit
            restores its magnitude. Defaults to `None`.

    Returns:
        The history and why training stopped.

    Raises:
        ConfigError: When a callback is a Keras 3 object, or ReduceLROnPlateau
            meets a schedule.
        TrainingDivergedError: When the loss (or the weights) stays non-finite
            after the blow-up guard's retries, or the fit ran to its end no
            better than it started after a recovery or an exploding loss
            (`BlowupGuard.diverged`).
    """
    total = train.epochs if epochs is None else epochs
    for callback in callbacks:
        ensure_tf_keras(callback, "callbacks")
    _refuse_plateau_with_schedule(model, callbacks, train)
    if train.tensorboard and any(isinstance(cb, keras.callbacks.TensorBoard) for cb in callbacks):
        train = train.replace(tensorboard=False)  # e.g. tracking.tensorboard already writes it
    previous: list[dict[str, Any]] = []
    # Only the chief writes (TensorBoard, checkpoints, the history backup);
    # tf_keras's BackupAndRestore handles the other workers itself.
    chief = bool(getattr(model.distribute_strategy.extended, "should_checkpoint", True))
    if backup_dir is not None:
        backup_dir = Path(backup_dir)
        if not train.backup.resume and backup_dir.exists() and chief:
            logger.info("train.backup.resume is False: removing the backup in %s.", backup_dir)
            shutil.rmtree(backup_dir)
        # With a checkpoint to resume, the history of its epochs must be readable too.
        previous = kcb.load_records(
            backup_dir / HISTORY_BACKUP, strict=kcb.backup_exists(backup_dir)
        )
        if run_dir is None:
            run_dir = backup_dir.parent
    own = default_callbacks(
        train,
        has_validation=val_ds is not None,
        run_dir=run_dir,
        backup_dir=backup_dir,
        examples_per_epoch=examples_per_epoch,
        chief=chief,
    )
    if augment is not None:
        if previous:
            augment.restore(previous)
        own.insert(0, augment)
    performance = configure_execution(
        model,
        train_ds,
        train,
        [*own, *callbacks],
        epochs=total - initial_epoch,
        steps_per_epoch=steps_per_epoch,
        probe_dataset=val_ds,
        step_seconds=step_seconds,
    )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=total,
        initial_epoch=initial_epoch,
        callbacks=[*own, *callbacks],
        verbose=_verbose(train.verbose),
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
    )
    logs = kcb.merge_history(previous, history.epoch, history.history)
    stopping = next((cb for cb in own if isinstance(cb, kcb.EarlyStopping)), None)
    guard = next((cb for cb in own if isinstance(cb, kcb.BlowupGuard)), None)
    resumed_at = None
    if history.epoch and history.epoch[0] > initial_epoch:
        resumed_at = history.epoch[0] + 1
    elif not history.epoch and previous:
        resumed_at = total + 1
    if guard is not None and guard.recoveries:
        # After fit returned, so every callback has finished: the backup is
        # gone, and a rerun does not resume a diverged fit as a finished one.
        if val_ds is not None:
            _refuse_untrained(model, guard, val_ds, "validation")
        else:
            _refuse_untrained(model, guard, train_ds, "training")
    reason = _summary(stopping, guard, history.epoch, total, resumed_at, initial_epoch)
    best = stopping.best_epoch + 1 if stopping is not None and stopping.restored else None
    logger.info("Training stopped: %s.", reason)
    return TrainResult(
        history=logs,
        epochs_run=len(next(iter(logs.values()), [])),
        stop_reason=reason,
        best_epoch=best,
        resumed_at=resumed_at,
        recoveries=list(guard.recoveries) if guard is not None else [],
        performance=performance,
    )


def find_learning_rate(
    build: Callable[[TrainConfig], keras.Model],
    train_ds: tf.data.Dataset,
    train: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    reuse: bool = False,
) -> tuple[TrainConfig, dict[str, Any]]:
    """Resolves ``learning_rate="find"`` with a learning-rate range test.

    A probe model from `build` (compiled with a constant rate, no warmup, no
    EMA) runs the sweep of `train.lr_finder`; the suggestion becomes the
    (peak) learning rate of the returned options. With `out_dir`, the sweep
    and suggestion go to `lr_finder.json` and the loss-against-rate plot to
    `lr_finder.png`; with `reuse`, an existing `lr_finder.json` is used
    instead of a new sweep (a resumed run keeps its rate).

    Args:
        build: Builds and compiles a model from training options.
        train_ds: The training batches.
        train: The training options (`learning_rate="find"`, `lr_finder`).
        out_dir: Where to write the JSON and PNG. Defaults to `None`.
        reuse: Read an earlier `lr_finder.json` from `out_dir`. Defaults to
            `False`.

    Returns:
        The options with the suggested rate, and the range test's record.
    """
    saved = Path(out_dir) / LR_FINDER_JSON if out_dir is not None else None
    if reuse and saved is not None and saved.exists():
        record = json.loads(saved.read_text())
        logger.info(
            "Reusing the LR range test's suggestion %.3g from %s.", record["suggestion"], saved
        )
        return train.replace(learning_rate=float(record["suggestion"])), record
    finder = train.lr_finder
    probe = build(
        train.replace(
            learning_rate=finder.start_learning_rate,
            schedule="constant",
            schedule_options={},
            warmup={},
            ema=False,
            blowup_guard=False,
        )
    )
    result = kcb.lr_range_test(
        probe,
        train_ds,
        start_learning_rate=finder.start_learning_rate,
        end_learning_rate=finder.end_learning_rate,
        steps=finder.steps,
        rule=finder.rule,
        diverge=finder.diverge,
    )
    record = result.to_dict()
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        record["plot"] = kcb.plot_lr_range(result, saved.with_name(LR_FINDER_PNG)).name
        atomic_write(saved, json.dumps(record))
    return train.replace(learning_rate=result.suggestion), record
