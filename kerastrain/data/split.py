"""Train / validation / test splits and cross-validation folds, by index.

Everything goes through scikit-learn's splitters (`train_test_split`,
`KFold`, `StratifiedKFold`, `TimeSeriesSplit`); only row indices are made,
never a copy of the data. With ``data_options.split="time"`` rows keep their
order: training rows always come before validation rows, which come before
test rows, so no model sees the future of what it is scored on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.validate import rows
from kerastrain.errors import DataError, message
from kerastrain.task import Task

__all__ = ["Splits", "split_indices", "fold_indices", "fixed_splits"]


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


def _check_class_counts(
    y: np.ndarray, task: Task, options: DataConfig, validation_split: float, test_split: float
) -> None:
    parts = 1 + (validation_split > 0) + (test_split > 0)
    classes, counts = np.unique(y, return_counts=True)
    small = [(c, n) for c, n in zip(classes, counts) if n < parts]
    if small:
        cls, count = small[0]
        name = task.class_names[int(cls)] if task.class_names else int(cls)
        raise DataError(
            message(
                f"Class {name!r} has {count} example{'s' if count != 1 else ''} (rows "
                f"{rows(np.flatnonzero(y == cls))}); a stratified split into {parts} parts "
                f"needs at least {parts} of each class",
                received={
                    "data_options.validation_split": validation_split,
                    "data_options.test_split": test_split,
                },
                allowed="Add examples, lower data_options.validation_split or test_split to 0, "
                "or set data_options.stratify=False",
            )
        )
    n = len(y)
    for name, fraction in (("validation_split", validation_split), ("test_split", test_split)):
        if fraction > 0 and math.floor(fraction * n) < len(classes):
            raise DataError(
                message(
                    f"data_options.{name}={fraction} keeps {math.floor(fraction * n)} of {n} "
                    f"rows, fewer than the {len(classes)} classes, so it cannot hold one of each",
                    allowed="Raise it or set data_options.stratify=False",
                )
            )


def split_indices(
    y: np.ndarray,
    task: Task,
    options: DataConfig,
    seed: int,
    *,
    within: np.ndarray | None = None,
    validation_split: float | None = None,
    test_split: float | None = None,
) -> Splits:
    """Splits row indices into train, validation and test.

    Stratified by class for classification when `options.stratify` is set;
    in row order when `options.split` is `"time"`. The test split is taken
    first, so changing `validation_split` never moves a row into or out of
    the test set.

    Args:
        y: The validated labels (all rows).
        task: The task (stratification applies to classification only).
        options: `validation_split`, `test_split`, `stratify`, `split`.
        seed: The random seed of the shuffles.
        within: Split only these rows (a cross-validation fold's training
            part). Defaults to `None` (every row).
        validation_split: Replaces `options.validation_split`, as a fraction
            of the rows split. Defaults to `None`.
        test_split: Replaces `options.test_split`. Defaults to `None`.

    Returns:
        The indices of each split, each sorted.

    Raises:
        DataError: When a class is too small to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    val_share = options.validation_split if validation_split is None else validation_split
    test_share = options.test_split if test_split is None else test_split
    everything = np.arange(len(y)) if within is None else np.sort(np.asarray(within, np.int64))
    n = len(everything)
    ordered = options.split == "time"
    stratify = options.stratify and task.is_classification and not ordered
    if stratify:
        _check_class_counts(y[everything], task, options, val_share, test_share)
    empty = np.empty(0, dtype=np.int64)

    def cut(idx: np.ndarray, fraction: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction <= 0:
            return idx, empty
        if ordered:  # the latest rows are held out
            held = max(1, int(round(fraction * len(idx))))
            return idx[: len(idx) - held], idx[len(idx) - held :]
        keep, held = train_test_split(
            idx, test_size=fraction, random_state=seed + salt, stratify=y[idx] if stratify else None
        )
        return np.sort(keep), np.sort(held)

    rest, test = cut(everything, test_share, 0)
    # validation_split is a fraction of all rows, not of what the test split left.
    train, val = cut(rest, val_share / (1.0 - test_share), 1)
    if len(train) == 0:
        raise DataError(
            message(
                f"No rows are left for training out of {n}",
                received={
                    "data_options.validation_split": val_share,
                    "data_options.test_split": test_share,
                },
                allowed="Lower the held-out splits",
            )
        )
    return Splits(train=train, val=val, test=test)


def fixed_splits(
    y: np.ndarray, task: Task, options: DataConfig, seed: int, parts: dict[str, np.ndarray]
) -> Splits:
    """Splits a source fixed itself (TFDS's train/test), carving the missing
    validation or test rows out of its training rows.

    Args:
        y: The validated labels (all rows).
        task: The task.
        options: `validation_split` and `test_split` (fractions of the
            training part) for the parts not given.
        seed: The random seed.
        parts: Row indices by split name; `"train"` is required.

    Returns:
        The splits.
    """
    if "val" in parts and "test" in parts:
        train = np.asarray(parts["train"])
        if len(train) and np.all(train[1:] > train[:-1]):
            # Nothing to carve, and the training rows already sorted: kept as
            # they are (a streamed table's int32 rows, not an int64 copy).
            return Splits(train=train, val=parts["val"], test=parts["test"])
    carved = split_indices(
        y,
        task,
        options,
        seed,
        within=parts["train"],
        validation_split=0.0 if "val" in parts else options.validation_split,
        test_split=0.0 if "test" in parts else options.test_split,
    )
    return Splits(
        train=carved.train, val=parts.get("val", carved.val), test=parts.get("test", carved.test)
    )


def fold_indices(
    y: np.ndarray, task: Task, options: DataConfig, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds: ``(training rows, held-out rows)`` per fold.

    `StratifiedKFold` for classification when `options.stratify` is set,
    `TimeSeriesSplit` (each fold trains on the past only) when
    `options.split` is `"time"`, else `KFold`; shuffled and seeded except for
    time series.

    Args:
        y: The validated labels.
        task: The task.
        options: `stratify`, `split`.
        folds: The number of folds (at least 2).
        seed: The shuffle seed.

    Returns:
        One pair of sorted index arrays per fold.

    Raises:
        DataError: When a class has fewer rows than folds (stratified), or
            there are fewer rows than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    n = len(y)
    if folds < 2 or folds > n:
        raise DataError(
            message(
                f"Cross-validation needs 2 to {n} folds for {n} rows", received={"folds": folds}
            )
        )
    if options.split == "time":
        splitter: Any = TimeSeriesSplit(n_splits=folds)
    elif options.stratify and task.is_classification:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < folds:
            cls = classes[counts.argmin()]
            name = task.class_names[int(cls)] if task.class_names else int(cls)
            raise DataError(
                message(
                    f"Class {name!r} has {counts.min()} rows ({rows(np.flatnonzero(y == cls))}), "
                    f"fewer than the {folds} folds of a stratified k-fold",
                    allowed="Use fewer folds or data_options.stratify=False",
                )
            )
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    placeholder = np.zeros((n, 1), np.int8)
    return [(np.sort(tr), np.sort(te)) for tr, te in splitter.split(placeholder, y)]
