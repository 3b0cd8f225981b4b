"""One complete training run on prepared data: feed, build, compile, fit.

Both `fit_pipeline` and every tuning trial call :func:`run_training`, so a
trial trains exactly as the final fit does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.batching import empty_outputs
from kerastrain.config import PipelineConfig
from kerastrain.data.feed import InMemory, make_dataset, training_datasets
from kerastrain.data.prepare import Prepared
from kerastrain.data.preprocess import model_inputs
from kerastrain.distribute import coordinator_datasets, distributed_train_config, uses_coordinator
from kerastrain.models import Head, build_model
from kerastrain.models.transfer import fine_tune
from kerastrain.optim import make_loss, one_hot_labels, steps_per_epoch
from kerastrain.perf import (
    Decision,
    float32_twin,
    measure_precision,
    precision_is_measurable,
    precision_scope,
    probe_batch,
    resolve_precision,
)
from kerastrain.train import TrainResult, compile_model, train_model
from kerastrain.train import find_learning_rate as _range_test

logger = logging.getLogger(__name__)

__all__ = [
    "make_datasets",
    "build_compiled_model",
    "run_training",
    "predict_split",
    "global_batch_size",
    "find_learning_rate",
]


def global_batch_size(config: PipelineConfig, strategy: tf.distribute.Strategy) -> int:
    """Examples per optimizer update: the batch size per replica, times the
    replicas, times the micro-batches of gradient accumulation."""
    return config.batch_size * strategy.num_replicas_in_sync * config.train.gradient_accumulation


def make_datasets(
    config: PipelineConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    memory: InMemory | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Training and validation datasets with the global batch size.

    The global batch is `train.batch_size` per replica times the replicas
    (times `train.gradient_accumulation`: each batch holds the micro-batches
    of one update).
    """
    depth = prepared.task.num_classes if one_hot_labels(prepared.task, config.train) else None
    return training_datasets(
        prepared,
        global_batch_size(config, strategy),
        seed=config.seed,
        one_hot_depth=depth,
        memory=memory,
    )


def build_compiled_model(
    config: PipelineConfig, prepared: Prepared, strategy: tf.distribute.Strategy
) -> keras.Model:
    """Builds and compiles the model inside the strategy scope (and under the
    `train.execution.mixed_precision` policy); schedules count the steps of an epoch."""
    return _build(config, prepared, strategy)[0]


#: Precision decisions measured in this process, by model architecture (see
#: `_architecture`): a model rebuilt later (a tuning trial's best, a Hyperband
#: child warm-started from its parent) computes as the measured one did.
_MEASURED_PRECISION: dict[tuple, Decision] = {}


def _architecture(model: keras.Model, batch_size: int) -> tuple:
    """What a precision measurement depends on, without layer names (they
    change from one build to the next) or per-layer shapes (a shared layer
    has several)."""
    return (
        batch_size,
        str(model.input_shape),
        str(model.output_shape),
        tuple((type(layer).__name__, layer.count_params()) for layer in model.layers),
    )


def _build(
    config: PipelineConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    probe_data: tf.data.Dataset | None = None,
) -> tuple[keras.Model, Decision, float | None]:
    """`build_compiled_model`, measuring the precision when it can.

    With `execution.mixed_precision="auto"` choosing a reduced precision on one CPU
    device, the model is timed against its float32 twin on a batch of
    `probe_data` and the faster one is kept (`perf.measure_precision`); the
    decision is remembered for this architecture, so that later builds of
    it (without data to measure on) make the same choice.

    Returns:
        The compiled model, the precision decision, and the measured seconds
        of one step of the kept model (None when nothing was measured).
    """
    task = prepared.task
    setting = config.train.execution.mixed_precision
    precision = resolve_precision(setting, strategy)
    with strategy.scope(), precision_scope(precision.value):
        inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
        model = build_model(
            config.model,
            inputs,
            Head(task.output_units, task.output_activation),
            config.model_options,
        )
    step_seconds = None
    if setting == "auto" and precision.value != "float32" and precision_is_measurable(strategy):
        key = _architecture(model, global_batch_size(config, strategy))
        known = _MEASURED_PRECISION.get(key)
        batch = probe_batch(probe_data) if known is None else None
        if known is not None:
            precision = known
            if precision.value == "float32":
                model = float32_twin(model)
        elif batch is not None:
            try:
                model, precision, step_seconds = measure_precision(
                    model, precision, make_loss(task, config.train), batch
                )
                _MEASURED_PRECISION[key] = precision
            except (ValueError, TypeError, tf.errors.OpError) as exc:  # a custom layer, say
                precision = Decision(
                    precision.value,
                    f"{precision.reason} (not compared with float32: {type(exc).__name__}: {exc})",
                )
    if setting == "auto":
        logger.info("mixed_precision='auto' chose %s: %s.", precision.value, precision.reason)
    with strategy.scope():
        compile_model(
            model,
            task,
            distributed_train_config(config, strategy),
            steps_per_epoch=steps_per_epoch(
                len(prepared.splits.train), global_batch_size(config, strategy)
            ),
        )
    logger.info("Model %r: %s parameters.", model.name, f"{model.count_params():,}")
    return model, precision, step_seconds


def run_training(
    config: PipelineConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    *,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    initial_epoch: int = 0,
    model: keras.Model | None = None,
    memory: InMemory | None = None,
) -> tuple[keras.Model, TrainResult]:
    """Builds (unless given), compiles and fits a model on ``prepared``.

    Args:
        config: The resolved config (model, model_options, train).
        prepared: The prepared data.
        strategy: The distribution strategy.
        backup_dir: `BackupAndRestore` folder. Defaults to `None`.
        callbacks: Extra tf_keras callbacks. Defaults to `()`.
        epochs: Stop at this epoch instead of `train.epochs`. Defaults to `None`.
        initial_epoch: Start from this epoch. Defaults to `0`.
        model: A compiled model to continue training. Defaults to `None`.
        memory: The data as tensors, to share between runs. Defaults to `None`.

    Returns:
        The trained model and what training produced.
    """
    steps: dict[str, int] = {}
    if uses_coordinator(strategy):  # parameter servers: each worker builds its own pipeline
        train_ds, val_ds, steps = coordinator_datasets(
            lambda: make_datasets(config, prepared, tf.distribute.get_strategy()),
            prepared,
            global_batch_size(config, strategy),
        )
    else:
        train_ds, val_ds = make_datasets(config, prepared, strategy, memory)
    step_seconds = None
    if model is None:
        # The measured batch comes from the validation data when there is
        # some: one more pass over the reshuffling training data would change
        # the order of the epochs that follow.
        model, precision, step_seconds = _build(
            config, prepared, strategy, val_ds if val_ds is not None else train_ds
        )
    else:
        precision = _MEASURED_PRECISION.get(
            _architecture(model, global_batch_size(config, strategy)),
            resolve_precision(config.train.execution.mixed_precision, strategy),
        )
    train_config = distributed_train_config(config, strategy)
    result = train_model(
        model,
        train_ds,
        val_ds,
        train_config,
        callbacks=callbacks,
        epochs=epochs,
        initial_epoch=initial_epoch,
        backup_dir=backup_dir,
        examples_per_epoch=len(prepared.splits.train),
        step_seconds=step_seconds,
        **steps,
    )
    result = fine_tune(
        model,
        result,
        prepared.task,
        train_config,
        train_ds,
        val_ds,
        strategy,
        callbacks=callbacks,
        backup_dir=backup_dir,
        **steps,
    )
    result.performance["mixed_precision"] = precision
    return model, result


def find_learning_rate(
    config: PipelineConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    run_dir: str | os.PathLike | None = None,
    *,
    reuse: bool = False,
) -> PipelineConfig:
    """``config`` with `train.learning_rate="find"` replaced by the suggestion
    of a learning-rate range test on a probe model (unchanged otherwise).

    See `kerastrain.train.find_learning_rate`; `lr_finder.json` and
    `lr_finder.png` go to `run_dir`, and `reuse` (a resumed run) reads the
    earlier suggestion instead of sweeping again.
    """
    if config.train.learning_rate != "find":
        return config
    build = lambda train: build_compiled_model(  # noqa: E731
        dataclasses.replace(config, train=train), prepared, strategy
    )
    train_ds, _ = make_datasets(config, prepared, strategy)
    train, _ = _range_test(
        build, train_ds, config.train, out_dir=run_dir, reuse=reuse and config.train.backup.resume
    )
    return dataclasses.replace(config, train=train)


def predict_split(
    model: keras.Model,
    prepared: Prepared,
    split: str,
    memory: InMemory | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """The model's outputs on one split, gathered batch by batch from the
    data (no copy of the split is made)."""
    indices = getattr(prepared.splits, split)
    if len(indices) == 0:
        return empty_outputs(model)
    memory = memory or InMemory(prepared.x, prepared.training_targets)
    dataset = make_dataset(memory, indices, batch_size, training=False)
    return model.predict(dataset.map(lambda x, y: x), verbose=0)
