"""One training run with the weights split over a device mesh (`strategy="model_parallel"`).

`run_model_parallel` takes the arguments of `kerastrain.training.run.run_training`
and trains the same model, with the same callbacks, its weights laid on a
DTensor mesh (`kerastrain.mesh`):

1. the model is built and compiled on one device as usual (the same
   initial weights as a single-device run with the same seed), and its
   layouts are planned from it (`mesh.plan_layouts`);
2. the same architecture is rebuilt under the plan's `LayoutMap`, every
   variable is checked with `dtensor.fetch_layout`, and the initial weights
   are scattered into it; it is compiled with a DTensor-aware optimizer (the
   tf_keras optimizer given the mesh);
3. the training and validation batches become `DTensorDataset`s (repeating,
   so `fit` counts steps per epoch), whole on every device, each device's
   iterator yielding the same batches, in a single-device run's order
   (`mesh.dtensor_dataset` says why, and why they are not split over "batch");
4. the sharded model's `get_weights`, `set_weights` and `save_weights` gather
   and scatter its shards, so early stopping and checkpoints work unchanged
   (the blow-up guard gathers and scatters the optimizer's split slots too);
   `BackupAndRestore` saves the sharded variables themselves (a killed run
   resumes at its next epoch);
5. after `fit`, the shards are gathered into the single-device model, which is
   what the run returns: evaluation, export (SavedModel, `.keras`, TFLite)
   and the parity checks see an ordinary tf_keras model.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from kerastrain import mesh as meshes
from kerastrain._keras import keras, tf
from kerastrain.config import DistributeConfig, TrainConfig
from kerastrain.data.feed import epoch_seeds, training_datasets
from kerastrain.data.prepare import Prepared
from kerastrain.data.stream import Stream
from kerastrain.errors import ConfigError, message
from kerastrain.training.execution import Decision
from kerastrain.training.fit import TrainResult, compile_options, train_model
from kerastrain.training.host_inputs import split_host_inputs
from kerastrain.training.losses import make_loss, make_metrics, one_hot_labels
from kerastrain.training.optimizers import make_optimizer, steps_per_epoch
from kerastrain.training.run import build_compiled_model

logger = logging.getLogger(__name__)

__all__ = ["run_model_parallel", "shard_model", "gather_into"]


def _single_step_float32(train: TrainConfig) -> TrainConfig:
    """``train`` with the `"auto"` speed options as the DTensor step runs them
    (the config refuses any other value with `strategy="model_parallel"`)."""
    execution = train.execution.replace(
        mixed_precision="float32", jit_compile=False, steps_per_execution=1
    )
    return train.replace(execution=execution)


def gather_into(sharded: keras.Model, plain: keras.Model) -> keras.Model:
    """Copies a sharded model's weights, gathered, into its single-device twin."""
    plain.set_weights([meshes.gather(v) for v in sharded.weights])
    return plain


def _get_weights(model: keras.Model) -> list[Any]:
    return [meshes.gather(v) for v in model.weights]


def _set_weights(model: keras.Model, weights: Sequence[Any]) -> None:
    if len(weights) != len(model.weights):
        raise ValueError(
            f"{model.name!r} has {len(model.weights)} weights; {len(weights)} were given"
        )
    for variable, value in zip(model.weights, weights):
        meshes.scatter(variable, value)


def _save_weights(
    model: keras.Model, plain: keras.Model, owner: keras.Model, filepath: Any, *args, **kwargs
) -> None:
    gather_into(model, plain)
    owner.save_weights(filepath, *args, **kwargs)


def shard_model(
    plain: keras.Model, plan: meshes.Plan, mesh: Any, *, owner: keras.Model | None = None
) -> keras.Model:
    """``plain``'s architecture rebuilt with its weights laid out by ``plan``.

    The weights are ``plain``'s own, scattered to the devices. The returned
    model's `get_weights`, `set_weights` and `save_weights` work on whole
    values (gathering and scattering the shards; `save_weights` writes
    ``owner`` with the gathered weights), as callbacks expect.

    ``owner`` is the model ``plain``'s layers belong to when ``plain`` is
    only its part on the mesh (`training.host_inputs`); defaults to ``plain``.

    Raises:
        RuntimeError: When a variable did not get its planned layout.
    """
    with meshes.random_generator(), meshes.layout_map(plan, mesh).scope():
        sharded = plain.__class__.from_config(meshes.mesh_config(plain.get_config()))
    meshes.check_layouts(sharded, plan)
    meshes.replicate_constants(sharded, mesh)
    _set_weights(sharded, plain.get_weights())
    sharded.get_weights = functools.partial(_get_weights, sharded)
    sharded.set_weights = functools.partial(_set_weights, sharded)
    sharded.save_weights = functools.partial(_save_weights, sharded, plain, owner or plain)
    return sharded


def _metrics_on_mesh(metrics: Sequence[Any], mesh: Any) -> list[Any]:
    """``metrics`` with their state on the mesh. A metric without one counts
    its examples once per device (tf_keras under DTensor): the accuracy of a
    2x2 mesh came out a quarter of the true one. A metric class that cannot
    take a mesh is left out of the training logs (the evaluation after
    training computes its value on the gathered model)."""
    placed = []
    for metric in metrics:
        try:
            placed.append(type(metric).from_config({**metric.get_config(), "mesh": mesh}))
        except TypeError:
            logger.warning(
                "The %s metric cannot be kept on a DTensor mesh: it is left out of the "
                "training logs under strategy='model_parallel'.",
                metric.name,
            )
    return placed


def _log_plan(plan: meshes.Plan, model: keras.Model) -> None:
    logger.info("Model parallel plan: %s.", plan.describe())
    if plan.replicated:
        logger.info(
            "Replicated on every device (not split): %s.",
            ", ".join(f"{name} ({why})" for name, why in plan.replicated.items()),
        )


def run_model_parallel(
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
) -> tuple[keras.Model, TrainResult]:
    """`run_training` with the weights split over the `distribute.mesh` devices.

    Args:
        train: The training options (float32, one step per call: see
            `kerastrain.config.PipelineConfig`'s checks).
        prepared: The prepared data.
        strategy: TensorFlow's default strategy (DTensor replaces a
            `tf.distribute` strategy here).
        model_spec: The `model` option.
        model_options: The factory's keyword options. Defaults to `None`.
        batch_size: Examples per batch shard: the global batch is
            `batch_size` times the mesh's "batch" axis.
        seed: Seeds the shuffle and the augmentations. Defaults to `None`.
        distribute: `mesh`, `layouts`, `scale_learning_rate`. Defaults to
            `None` (every device on "model").
        backup_dir: `BackupAndRestore` folder. Defaults to `None`.
        callbacks: Extra tf_keras callbacks. Defaults to `()`.

    Returns:
        The trained model on one device (its weights gathered from the mesh)
        and what training produced; `performance["model_parallel"]` holds the
        mesh and which layers were split or kept whole.
    """
    if isinstance(prepared.x, Stream):
        # A mesh opens one iterator per device; only in-memory data can give
        # every one of them the same batches (`epoch_seeds`).
        raise ConfigError(
            message(
                "strategy='model_parallel' needs the data in memory: a stream read from "
                "files is reshuffled by each device's iterator, so the devices of the mesh "
                "would train on different rows",
                received={"data_options.in_memory_mb": prepared.options.in_memory_mb},
                allowed="Raise data_options.in_memory_mb above the data's size, or train "
                "streamed data with a data-parallel strategy ('mirrored', 'multi_worker')",
            )
        )
    distribute = distribute or DistributeConfig()
    mesh = meshes.make_mesh(distribute)
    batch_axis, model_axis = mesh.dim_size("batch"), mesh.dim_size("model")
    global_batch = batch_size * batch_axis
    train = _single_step_float32(train)
    if (
        distribute.scale_learning_rate
        and batch_axis > 1
        and isinstance(train.learning_rate, (int, float))
    ):
        train = train.replace(learning_rate=train.learning_rate * batch_axis)
    depth = prepared.task.num_classes if one_hot_labels(prepared.task, train) else None
    # Every device's iterator must yield the same batches (`mesh.dtensor_dataset`):
    # one pass over the epochs a single-device fit would draw.
    train_ds, val_ds = training_datasets(
        prepared,
        global_batch,
        seed=seed,
        one_hot_depth=depth,
        epoch_seeds=epoch_seeds(seed, train.epochs),
    )
    steps = steps_per_epoch(len(prepared.splits.train), global_batch)
    with strategy.scope():
        plain = build_compiled_model(
            train,
            prepared,
            strategy,
            model_spec=model_spec,
            model_options=model_options,
            batch_size=global_batch,
            distribute=distribute,
        )
    # String layers (tokenizers, category lookups) run before the mesh.
    host = split_host_inputs(plain)
    network = plain if host is None else host.network
    if host is not None:
        train_ds = host.map(train_ds)
        val_ds = None if val_ds is None else host.map(val_ds)
    plan = meshes.plan_layouts(
        network, {"batch": batch_axis, "model": model_axis}, distribute.layouts
    )
    _log_plan(plan, network)
    sharded = shard_model(network, plan, mesh, owner=plain)
    sharded.compile(
        optimizer=make_optimizer(train, steps_per_epoch=steps, mesh=mesh),
        loss=make_loss(prepared.task, train),
        metrics=_metrics_on_mesh(make_metrics(prepared.task, train), mesh),
        **compile_options(train),
    )
    meshes.dense_gradients(sharded.optimizer)  # embeddings: no sparse update on a mesh
    logger.info(
        "Parameter bytes on the most loaded device: %s of %s in all.",
        f"{meshes.per_device_parameter_bytes(sharded):,}",
        f"{sum(v.shape.num_elements() * v.dtype.size for v in plain.weights):,}",
    )
    validation = None
    validation_steps = None
    if val_ds is not None:
        validation = meshes.dtensor_dataset(val_ds, global_batch, mesh)
        # Whole batches only: the last one wraps around to the split's first rows.
        validation_steps = max(1, math.ceil(len(prepared.splits.val) / global_batch))
    result = train_model(
        sharded,
        meshes.dtensor_dataset(train_ds, global_batch, mesh),
        validation,
        train,
        callbacks=callbacks,
        backup_dir=backup_dir,
        examples_per_epoch=len(prepared.splits.train),
        steps_per_epoch=steps,
        validation_steps=validation_steps,
    )
    gather_into(sharded, network)  # the same variables as plain's
    result.performance["mixed_precision"] = Decision(
        "float32", "strategy='model_parallel' trains in float32"
    )
    result.performance["model_parallel"] = Decision(
        f"mesh batch={batch_axis} x model={model_axis}", plan.describe().split("; ", 1)[1]
    )
    return plain, result
