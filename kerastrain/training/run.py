"""One complete training run on prepared data: feed, build, compile, fit.

Both `fit_pipeline` and every tuning trial call :func:`run_training`, so a
trial trains exactly as the final fit does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.batching import empty_outputs
from kerastrain.config import DistributeConfig, TrainConfig
from kerastrain.data.adaptive import magnitude_variable
from kerastrain.data.balance import resampled_size
from kerastrain.data.feed import InMemory, coordinator_datasets, make_dataset, training_datasets
from kerastrain.data.prepare import Prepared
from kerastrain.data.preprocess import model_inputs
from kerastrain.distribute import distributed_train_config, uses_coordinator
from kerastrain.models import Head, build_model, fine_tune_plan
from kerastrain.training.adaptive_augment import AdaptiveAugmentation
from kerastrain.training.execution import Decision
from kerastrain.training.fine_tune import fine_tune
from kerastrain.training.fit import TrainResult, compile_model, train_model
from kerastrain.training.fit import find_learning_rate as _range_test
from kerastrain.training.flops import flops_per_token
from kerastrain.training.losses import make_loss, one_hot_labels
from kerastrain.training.memory import MemoryPlan, MiB, check_memory, device_memory, plan_memory
from kerastrain.training.milestones import accuracy_milestones
from kerastrain.training.optimizers import steps_per_epoch
from kerastrain.training.precision import (
    choose_precision,
    computes_in_float32,
    precision_scope,
    remembered_precision,
    resolve_precision,
)
from kerastrain.training.recompute import recompute_twin, share_compilation

logger = logging.getLogger(__name__)

__all__ = [
    "make_datasets",
    "build_compiled_model",
    "run_training",
    "predict_split",
    "global_batch_size",
    "find_learning_rate",
]


def global_batch_size(batch_size: int, strategy: tf.distribute.Strategy, accumulation: int) -> int:
    """Examples per optimizer update: the batch size per replica, times the
    replicas, times the micro-batches of gradient accumulation."""
    return batch_size * strategy.num_replicas_in_sync * accumulation


def _training_rows(prepared: Prepared) -> int:
    """Rows of a training epoch (after `data_options.resample`)."""
    return resampled_size(prepared.y, prepared.splits.train, prepared.options.resample)


def make_datasets(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    memory: InMemory | None = None,
    *,
    batch_size: int,
    seed: int | None = None,
    magnitude: tf.Variable | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Training and validation datasets with the global batch size.

    The global batch is `batch_size` per replica times the replicas
    (times `train.gradient_accumulation`: each batch holds the micro-batches
    of one update). `seed` seeds the shuffle and the augmentations;
    `magnitude` is the adaptive augmentation's variable.
    """
    depth = prepared.task.num_classes if one_hot_labels(prepared.task, train) else None
    return training_datasets(
        prepared,
        global_batch_size(batch_size, strategy, train.gradient_accumulation),
        seed=seed,
        one_hot_depth=depth,
        memory=memory,
        class_weight=train.class_weight,
        magnitude=magnitude,
    )


def build_compiled_model(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    *,
    model_spec: Any,
    model_options: Mapping[str, Any] | None = None,
    batch_size: int,
    distribute: DistributeConfig | None = None,
) -> keras.Model:
    """Builds and compiles the model inside the strategy scope (and under the
    `train.execution.mixed_precision` policy); schedules count the steps of an epoch.
    The arguments are those of `run_training`."""
    return _build(train, prepared, strategy, model_spec, model_options, batch_size, distribute)[0]


def _build(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    model_spec: Any,
    model_options: Mapping[str, Any] | None,
    batch_size: int,
    distribute: DistributeConfig | None,
    probe_data: tf.data.Dataset | None = None,
) -> tuple[keras.Model, Decision, float | None, MemoryPlan]:
    """`build_compiled_model`, measuring the precision when it can, after
    checking its memory plan (refused with a `ResourceError` when it cannot fit).

    With `execution.mixed_precision="auto"` choosing a reduced precision on a
    CPU, a model with a large enough step is timed against its float32 twin
    on a batch of `probe_data` and the faster one is kept, under every
    strategy that can measure it; elsewhere float32 is kept
    (`precision.choose_precision`);
    the decision is remembered for this architecture, so that later builds
    of it (without data to measure on) make the same choice.

    Returns:
        The compiled model, the precision decision, the measured seconds
        of one step of the kept model (None when nothing was measured), and
        the memory plan.
    """
    task = prepared.task
    global_batch = global_batch_size(batch_size, strategy, train.gradient_accumulation)
    precision = resolve_precision(train.execution.mixed_precision, strategy)

    def build(policy: str) -> keras.Model:
        with strategy.scope(), precision_scope(policy):
            inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
            return build_model(
                model_spec, inputs, Head(task.output_units, task.output_activation), model_options
            )

    model = build(precision.value)
    plan = _check_memory(model, train, strategy, batch_size, precision.value)
    step_seconds = None
    if train.execution.mixed_precision == "auto":
        model, precision, step_seconds = choose_precision(
            model, precision, strategy, global_batch, make_loss(task, train), probe_data
        )
        if precision.value == "float32" and not computes_in_float32(model):
            model = build("float32")  # no float32 copy of it could be made
        logger.info("mixed_precision='auto' chose %s: %s.", precision.value, precision.reason)
        if precision.value != plan.precision:
            plan = _check_memory(model, train, strategy, batch_size, precision.value)
    with strategy.scope():
        compile_model(
            model,
            task,
            distributed_train_config(train, distribute or DistributeConfig(), strategy),
            steps_per_epoch=steps_per_epoch(_training_rows(prepared), global_batch),
        )
    logger.info("Model %r: %s parameters.", model.name, f"{model.count_params():,}")
    if prepared.has_text:
        per_token = flops_per_token(model)
        if per_token is not None:
            logger.info("Model %r: %s forward FLOPs per token.", model.name, f"{per_token:,.0f}")
    return model, precision, step_seconds, plan


def _check_memory(
    model: keras.Model,
    train: TrainConfig,
    strategy: tf.distribute.Strategy,
    batch_size: int,
    precision: str,
) -> MemoryPlan:
    """The memory plan of training ``model`` (`kerastrain.training.memory`),
    checked against `train.memory_limit_mb` or the device's memory."""
    if train.memory_limit_mb is not None:
        available, source = int(train.memory_limit_mb * MiB), "train.memory_limit_mb"
    else:
        available, source = device_memory(strategy)
    plan = plan_memory(
        model,
        train,
        batch_size=batch_size,
        precision=precision,
        available=available,
        source=source,
    )
    check_memory(plan)
    return plan


def run_training(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    *,
    model_spec: Any,
    model_options: Mapping[str, Any] | None = None,
    batch_size: int,
    seed: int | None = None,
    distribute: DistributeConfig | None = None,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    initial_epoch: int = 0,
    model: keras.Model | None = None,
    memory: InMemory | None = None,
) -> tuple[keras.Model, TrainResult]:
    """Builds (unless given), compiles and fits a model on ``prepared``.

    A `transfer` model then runs its fine-tuning plan
    (`kerastrain.models.fine_tune_plan`) in the same call.

    Args:
        train: The training options.
        prepared: The prepared data.
        strategy: The distribution strategy.
        model_spec: The `model` option (see `kerastrain.models.build_model`).
        model_options: The factory's keyword options. Defaults to `None`.
        batch_size: Examples per replica (per micro-batch).
        seed: Seeds the shuffle and the augmentations. Defaults to `None`.
        distribute: The distribution options. Defaults to `None` (defaults).
        backup_dir: `BackupAndRestore` folder. Defaults to `None`.
        callbacks: Extra tf_keras callbacks. Defaults to `()`.
        epochs: Stop at this epoch instead of `train.epochs`. Defaults to `None`.
        initial_epoch: Start from this epoch. Defaults to `0`.
        model: A compiled model to continue training. Defaults to `None`.
        memory: The data as tensors, to share between runs. Defaults to `None`.

    Returns:
        The trained model and what training produced (its `memory_plan` the
        plan checked before training).

    Raises:
        ResourceError: When the memory plan says the run cannot fit the
            device (`train.memory_limit_mb`), before anything trains.
    """
    global_batch = global_batch_size(batch_size, strategy, train.gradient_accumulation)
    steps: dict[str, int] = {}
    # The adaptive augmentation's magnitude, moved between epochs by its callback.
    policy, magnitude, adaptive = prepared.augment_policy, None, None
    if policy is not None and not uses_coordinator(strategy):
        magnitude = magnitude_variable(policy["initial"])
        adaptive = AdaptiveAugmentation(magnitude, policy)
    if uses_coordinator(strategy):  # parameter servers: each worker builds its own pipeline
        train_ds, val_ds, steps = coordinator_datasets(
            lambda: make_datasets(
                train, prepared, tf.distribute.get_strategy(), batch_size=batch_size, seed=seed
            ),
            prepared,
            global_batch,
        )
    else:
        train_ds, val_ds = make_datasets(
            train, prepared, strategy, memory, batch_size=batch_size, seed=seed,
            magnitude=magnitude,
        )  # fmt: skip
    step_seconds = plan = None
    if model is None:
        # The measured batch comes from the validation data when there is
        # some: one more pass over the reshuffling training data would change
        # the order of the epochs that follow.
        model, precision, step_seconds, plan = _build(
            train,
            prepared,
            strategy,
            model_spec,
            model_options,
            batch_size,
            distribute,
            val_ds if val_ds is not None else train_ds,
        )
    else:
        precision = remembered_precision(
            model, train.execution.mixed_precision, strategy, global_batch
        )
    train_config = distributed_train_config(train, distribute or DistributeConfig(), strategy)
    result = train_model(
        _fitted(model, train_config, prepared, strategy, global_batch),
        train_ds,
        val_ds,
        train_config,
        callbacks=callbacks,
        epochs=epochs,
        initial_epoch=initial_epoch,
        backup_dir=backup_dir,
        examples_per_epoch=_training_rows(prepared),
        step_seconds=step_seconds,
        augment=adaptive,
        **steps,
    )
    result = fine_tune(
        model,
        fine_tune_plan(model_spec, model_options),
        result,
        prepared.task,
        train_config,
        train_ds,
        val_ds,
        strategy,
        callbacks=callbacks,
        backup_dir=backup_dir,
        fitted=lambda phase2: _fitted(phase2, train_config, prepared, strategy, global_batch),
        **steps,
    )
    result.performance["mixed_precision"] = precision
    result.memory_plan = plan.as_dict() if plan is not None else None
    milestones = accuracy_milestones(result.history)
    if milestones is not None:
        result.performance["milestones"] = milestones
    return model, result


def _fitted(
    model: keras.Model,
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    global_batch: int,
) -> keras.Model:
    """The model `model.fit` runs on: ``model`` itself, or with
    `train.recompute` its twin over the same variables and optimizer whose
    blocks recompute their activations (`kerastrain.training.recompute`)."""
    if not train.recompute:
        return model
    with strategy.scope():
        twin = recompute_twin(model, train.recompute)
        compile_model(
            twin,
            prepared.task,
            train,
            steps_per_epoch=steps_per_epoch(_training_rows(prepared), global_batch),
        )
    return share_compilation(twin, model)


def find_learning_rate(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    run_dir: str | os.PathLike | None = None,
    *,
    reuse: bool = False,
    model_spec: Any,
    model_options: Mapping[str, Any] | None = None,
    batch_size: int,
    seed: int | None = None,
    distribute: DistributeConfig | None = None,
) -> TrainConfig:
    """``train`` with `learning_rate="find"` replaced by the suggestion
    of a learning-rate range test on a probe model (unchanged otherwise).

    See `kerastrain.training.fit.find_learning_rate`; `lr_finder.json` and
    `lr_finder.png` go to `run_dir`, and `reuse` (a resumed run) reads the
    earlier suggestion instead of sweeping again. The probe is built from
    the other arguments, as `run_training` builds its model.
    """
    if train.learning_rate != "find":
        return train
    global_batch = global_batch_size(batch_size, strategy, train.gradient_accumulation)
    # Under train.recompute the probe trains as the run will (its recomputing
    # twin), so the sweep fits in the memory the run fits in.
    build = lambda probe: _fitted(  # noqa: E731
        build_compiled_model(
            probe,
            prepared,
            strategy,
            model_spec=model_spec,
            model_options=model_options,
            batch_size=batch_size,
            distribute=distribute,
        ),
        probe,
        prepared,
        strategy,
        global_batch,
    )
    train_ds, _ = make_datasets(train, prepared, strategy, batch_size=batch_size, seed=seed)
    train, _ = _range_test(
        build, train_ds, train, out_dir=run_dir, reuse=reuse and train.backup.resume
    )
    return train


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
