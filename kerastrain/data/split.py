"""Train / validation / test splits, by index, through scikit-learn."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.validate import Task, rows
from kerastrain.errors import DataError

__all__ = ["Splits", "split_indices"]


@dataclasses.dataclass(frozen=True)
class Splits:
    """Row indices of each split; the data itself is never copied here.

    Attributes:
        train: Indices of the training rows.
        val: Indices of the validation rows (may be empty).
        test: Indices of the test rows (may be empty).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _check_class_counts(y: np.ndarray, task: Task, options: DataConfig) -> None:
    parts = 1 + (options.validation_split > 0) + (options.test_split > 0)
    classes, counts = np.unique(y, return_counts=True)
    small = [(c, n) for c, n in zip(classes, counts) if n < parts]
    if small:
        cls, count = small[0]
        name = task.class_names[int(cls)] if task.class_names else int(cls)
        raise DataError(
            f"Class {name!r} has {count} example{'s' if count != 1 else ''} (rows "
            f"{rows(np.flatnonzero(y == cls))}); a stratified split into {parts} parts needs "
            f"at least {parts} of each class. Add examples, lower data_options.validation_split "
            "or test_split to 0, or set data_options.stratify=False.")
    n = len(y)
    for name, fraction in (("validation_split", options.validation_split),
                           ("test_split", options.test_split)):
        if fraction > 0 and math.floor(fraction * n) < len(classes):
            raise DataError(
                f"data_options.{name}={fraction} keeps {math.floor(fraction * n)} of {n} rows, "
                f"fewer than the {len(classes)} classes, so it cannot hold one of each. Raise it "
                "or set data_options.stratify=False.")


def split_indices(y: np.ndarray, task: Task, options: DataConfig, seed: int) -> Splits:
    """Splits row indices into train, validation and test.

    Stratified by class for classification when `options.stratify` is set.
    The test split is taken first, so changing `validation_split` never moves
    a row into or out of the test set.

    Args:
        y: The validated labels.
        task: The task (stratification applies to classification only).
        options: `validation_split`, `test_split`, `stratify`.
        seed: The random seed of the shuffles.

    Returns:
        The indices of each split.

    Raises:
        DataError: When a class is too small to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    everything = np.arange(n)
    stratify = options.stratify and task.is_classification
    if stratify:
        _check_class_counts(y, task, options)
    empty = np.empty(0, dtype=np.int64)

    def cut(idx: np.ndarray, fraction: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction <= 0:
            return idx, empty
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed + salt,
                                      stratify=y[idx] if stratify else None)
        return np.sort(keep), np.sort(held)

    rest, test = cut(everything, options.test_split, 0)
    # validation_split is a fraction of all rows, not of what the test split left.
    val_fraction = options.validation_split / (1.0 - options.test_split)
    train, val = cut(rest, val_fraction, 1)
    if len(train) == 0:
        raise DataError(f"No rows are left for training out of {n}; lower the held-out splits.")
    return Splits(train=train, val=val, test=test)
