"""Class imbalance: resampling the training split, and class weights.

Both act on training only. `resample_rows` draws the training rows of an
epoch (``data_options.resample``); validation and test rows are never
touched, so their scores keep the true class distribution. `class_weights`
turns ``train.class_weight`` into one weight per class, which the feed adds
to the training batches as sample weights (`kerastrain.data.feed`): that
works with `tf.data`, with gradient accumulation (which splits the weights
with the batch) and with mixed labels (mixup), where Keras's own
`class_weight` argument of `fit` does not apply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerastrain.errors import config_error
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = ["resample_rows", "resampled_size", "class_weights", "check_balance_options"]


def _class_rows(y: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    labels = y[rows].astype(np.int64)
    return [rows[labels == c] for c in np.unique(labels)]


def resampled_size(y: np.ndarray, rows: np.ndarray, mode: str | None) -> int:
    """How many rows `resample_rows` returns (without drawing them)."""
    if mode is None or not len(rows):
        return len(rows)
    counts = np.bincount(y[rows].astype(np.int64))
    counts = counts[counts > 0]
    per_class = counts.max() if mode == "oversample" else counts.min()
    return int(per_class * len(counts))


def resample_rows(
    y: np.ndarray, rows: np.ndarray, mode: str | None, seed: int | None
) -> np.ndarray:
    """The training rows rebalanced by class.

    Args:
        y: All labels (class indices).
        rows: The training rows.
        mode: `"oversample"`: every class is brought up to the largest
            class's count by drawing extra rows of it at random (with
            replacement; each original row kept once); `"undersample"`: every
            class is cut to the smallest class's count (a random subset);
            `None`: the rows as given.
        seed: Seed of the draw. Defaults to `None`.

    Returns:
        Row indices, sorted (an oversampled row appears several times).
    """
    rows = np.asarray(rows, np.int64)
    if mode is None or not len(rows):
        return rows
    rng = np.random.default_rng(seed)
    groups = _class_rows(y, rows)
    sizes = [len(g) for g in groups]
    target = max(sizes) if mode == "oversample" else min(sizes)
    out = []
    for group in groups:
        if mode == "oversample":
            extra = rng.choice(group, target - len(group), replace=True)
            out += [group, extra]
        else:
            out.append(rng.choice(group, target, replace=False))
    picked = np.sort(np.concatenate(out))
    logger.info(
        "resample=%r: %d training rows (per class %s) -> %d (%d per class); validation and "
        "test rows untouched.",
        mode,
        len(rows),
        sizes,
        len(picked),
        target,
    )
    return picked


def _label_index(task: Task) -> dict[str, int]:
    """Every way a label may be written in a mapping: its index (as an int or
    text) and, when the classes have names, its name."""
    index: dict[str, int] = {str(i): i for i in range(task.num_classes)}
    for i, name in enumerate(task.class_names or ()):
        index[str(name)] = i
    return index


def check_balance_options(class_weight: Any, resample: str | None, task: Task) -> None:
    """Refuses class weights or resampling that do not fit the task, and a
    `class_weight` mapping that names labels the data does not have; before
    training.

    Raises:
        ConfigError: Naming the option and the unknown labels.
    """
    if task.kind == "regression":
        if class_weight is not None:
            raise config_error(
                "train.class_weight", class_weight, "None for a regression task (it has no classes)"
            )
        if resample is not None:
            raise config_error(
                "data_options.resample", resample, "None for a regression task (it has no classes)"
            )
        return
    if isinstance(class_weight, Mapping):
        index = _label_index(task)
        unknown = [label for label in class_weight if str(label) not in index]
        if unknown:
            known = list(task.class_names) if task.class_names else list(range(task.num_classes))
            raise config_error(
                "train.class_weight",
                dict(class_weight),
                "a mapping whose keys are labels of the data ("
                + ", ".join(map(repr, known[:20]))
                + (", ..." if len(known) > 20 else "")
                + "); unknown: "
                + ", ".join(map(repr, unknown)),
                [str(k) for k in known],
            )
        twice = len({index[str(label)] for label in class_weight}) < len(class_weight)
        if twice:
            raise config_error(
                "train.class_weight",
                dict(class_weight),
                "a mapping that names each class once (by its name or by its index, not both)",
            )


def class_weights(class_weight: Any, y_train: np.ndarray, task: Task) -> np.ndarray | None:
    """One weight per class from `train.class_weight`.

    Args:
        class_weight: `None`, `"balanced"`, or a mapping label -> weight.
        y_train: The labels of the rows trained on (after any resampling).
        task: The task.

    Returns:
        float32 weights indexed by class, or None for `None`.

    Raises:
        ConfigError: As `check_balance_options`.

    Example:
        >>> class_weights("balanced", np.array([0, 0, 0, 1]), Task("binary", 2))
        array([0.6666667, 2.       ], dtype=float32)
    """
    if class_weight is None:
        return None
    check_balance_options(class_weight, None, task)
    k = task.num_classes
    if class_weight == "balanced":
        counts = np.bincount(np.asarray(y_train, np.int64), minlength=k).astype(np.float64)
        present = counts > 0
        weights = np.ones(k)
        weights[present] = len(y_train) / (present.sum() * counts[present])
    else:
        index = _label_index(task)
        weights = np.ones(k)
        for label, weight in class_weight.items():
            weights[index[str(label)]] = float(weight)
    logger.info(
        "Class weights (train.class_weight=%r): %s.",
        class_weight if isinstance(class_weight, str) else "mapping",
        ", ".join(f"{n}: {w:.4g}" for n, w in zip(task.class_names or range(k), weights)),
    )
    return weights.astype(np.float32)
