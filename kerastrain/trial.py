"""One complete training run on prepared data: feed, build, compile, fit.

Both `fit_pipeline` and every tuning trial call :func:`run_training`, so a
trial trains exactly as the final fit does.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.data.feed import InMemory, make_dataset
from kerastrain.data.prepare import Prepared
from kerastrain.data.preprocess import model_inputs
from kerastrain.distribute import coordinator_datasets, distributed_train_config, uses_coordinator
from kerastrain.models import Head, build_model
from kerastrain.optim import one_hot_labels
from kerastrain.train import TrainResult, compile_model, train_model

logger = logging.getLogger(__name__)

__all__ = ["make_datasets", "build_compiled_model", "run_training", "predict", "predict_split"]


def make_datasets(config: PipelineConfig, prepared: Prepared, strategy: tf.distribute.Strategy,
                  memory: InMemory | None = None) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Training and validation datasets with the global batch size.

    The global batch is `train.batch_size` per replica times the replicas.
    """
    memory = memory or InMemory(prepared.x, prepared.training_targets)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    map_batch = None
    if one_hot_labels(prepared.task, config.train):
        depth = prepared.task.num_classes
        map_batch = lambda x, y: (x, tf.one_hot(y, depth))  # noqa: E731
    train_ds = make_dataset(memory, prepared.splits.train, global_batch, training=True,
                            seed=config.seed, map_batch=map_batch)
    val_ds = None
    if len(prepared.splits.val):
        val_ds = make_dataset(memory, prepared.splits.val, global_batch, training=False,
                              map_batch=map_batch)
    return train_ds, val_ds


def build_compiled_model(config: PipelineConfig, prepared: Prepared,
                         strategy: tf.distribute.Strategy) -> keras.Model:
    """Builds and compiles the model inside the strategy scope."""
    task = prepared.task
    with strategy.scope():
        inputs = model_inputs(prepared.feature_shape, prepared.standardizer)
        model = build_model(config.model, inputs, Head(task.output_units, task.output_activation),
                            config.model_options)
        compile_model(model, task, distributed_train_config(config, strategy))
    logger.info("Model %r: %s parameters.", model.name, f"{model.count_params():,}")
    return model


def run_training(config: PipelineConfig, prepared: Prepared, strategy: tf.distribute.Strategy, *,
                 backup_dir: str | os.PathLike | None = None,
                 callbacks: Sequence[keras.callbacks.Callback] = (),
                 epochs: int | None = None, initial_epoch: int = 0,
                 model: keras.Model | None = None,
                 memory: InMemory | None = None) -> tuple[keras.Model, TrainResult]:
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
    if model is None:
        model = build_compiled_model(config, prepared, strategy)
    steps: dict[str, int] = {}
    if uses_coordinator(strategy):  # parameter servers: each worker builds its own pipeline
        train_ds, val_ds, steps = coordinator_datasets(
            lambda: make_datasets(config, prepared, tf.distribute.get_strategy()),
            prepared, config.batch_size * strategy.num_replicas_in_sync)
    else:
        train_ds, val_ds = make_datasets(config, prepared, strategy, memory)
    result = train_model(model, train_ds, val_ds, distributed_train_config(config, strategy),
                         callbacks=callbacks, epochs=epochs, initial_epoch=initial_epoch,
                         backup_dir=backup_dir, **steps)
    return model, result


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's outputs on ``x``, in inference mode."""
    if len(x) == 0:
        return np.empty((0, *model.output_shape[1:]), np.float32)
    return model.predict(x, batch_size=batch_size, verbose=0)


def predict_split(model: keras.Model, prepared: Prepared, split: str,
                  memory: InMemory | None = None, batch_size: int = 512) -> np.ndarray:
    """The model's outputs on one split, gathered batch by batch from the
    data (no copy of the split is made)."""
    indices = getattr(prepared.splits, split)
    if len(indices) == 0:
        return np.empty((0, *model.output_shape[1:]), np.float32)
    memory = memory or InMemory(prepared.x, prepared.training_targets)
    dataset = make_dataset(memory, indices, batch_size, training=False)
    return model.predict(dataset.map(lambda x, y: x), verbose=0)
