"""The loss and the metrics a task needs, and whether its labels are fed one-hot."""

from __future__ import annotations

from typing import Any

from kerastrain._keras import keras
from kerastrain.config import TrainConfig
from kerastrain.errors import config_error
from kerastrain.task import Task

__all__ = ["make_loss", "make_metrics", "one_hot_labels"]


def make_loss(task: Task, train: TrainConfig) -> keras.losses.Loss:
    """The loss for the task, or the one `train.loss` names.

    Multi-class labels are class indices; with label smoothing the input
    pipeline one-hot encodes them (see `one_hot_labels`) and the categorical
    loss is used, since the sparse one cannot smooth.
    """
    if train.loss != "auto":
        try:
            return keras.losses.get(train.loss)
        except ValueError:
            raise config_error(
                "train.loss", train.loss, "'auto' or the name of a tf_keras loss"
            ) from None
    smoothing = train.label_smoothing
    if task.kind == "binary":
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    if task.kind == "multiclass":
        if smoothing or task.soft_labels:
            return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        return keras.losses.SparseCategoricalCrossentropy()
    if smoothing:
        raise config_error("train.label_smoothing", smoothing, "0 for a regression task")
    return keras.losses.MeanSquaredError()


def one_hot_labels(task: Task, train: TrainConfig) -> bool:
    """Whether the pipeline must feed one-hot labels (multi-class smoothing,
    or mixed labels from mixup/cutmix)."""
    return task.kind == "multiclass" and (
        task.soft_labels or (train.loss == "auto" and train.label_smoothing > 0)
    )


def make_metrics(task: Task, train: TrainConfig) -> list[Any]:
    """Metrics Keras tracks every epoch (sklearn computes the rest later)."""
    if task.kind == "binary":
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    if task.kind == "multiclass":
        if one_hot_labels(task, train):
            return [keras.metrics.CategoricalAccuracy(name="accuracy")]
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [
        keras.metrics.MeanAbsoluteError(name="mae"),
        keras.metrics.RootMeanSquaredError(name="rmse"),
    ]
