"""Checks that data can be trained on, and what task it poses.

Every problem raises :class:`~kerastrain.DataError` naming the rows at fault
(the first few indices and how many in all) before anything trains. Nothing
is dropped silently. `check_finite` is the one finiteness check of every input
path (arrays, tables, CSV files, tf.data datasets, regression targets).
Labels must show at least two classes, and class indices without gaps unless
``data_options.num_classes`` says how many classes there are.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.errors import DataError, message
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "Validated",
    "validate",
    "check_labels",
    "check_finite",
    "nonfinite_rows",
    "rows",
    "unconvertible_rows",
    "FLOAT32_MAX",
]

#: Float labels with at most this many distinct integral values are classes.
MAX_INFERRED_CLASSES = 20
#: Rows checked at a time for non-finite values.
CHECK_ROWS = 65536
#: The largest float32: features, targets and their statistics live in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def rows(indices: Any, limit: int = 5) -> str:
    """``"3, 17, 42 (3 rows)"`` or ``"3, 17, 42, 50, 61, ... (120 rows)"``."""
    indices = np.asarray(indices).ravel()
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    more = ", ..." if len(indices) > limit else ""
    return f"{shown}{more} ({len(indices)} row{'s' if len(indices) != 1 else ''})"


def unconvertible_rows(values: np.ndarray) -> np.ndarray:
    """Indices of the entries of ``values`` that are not numbers."""
    bad = []
    for i, value in enumerate(values.reshape(len(values), -1) if values.ndim > 1 else values):
        try:
            np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


def nonfinite_rows(values: np.ndarray, *, missing_ok: bool = False) -> np.ndarray:
    """Indices of the rows of ``values`` that hold a NaN or infinite value.

    Checked a block of rows at a time, so that checking a large array costs no
    array of its size.

    Args:
        values: Numbers, one row per example (any rank).
        missing_ok: NaN marks a missing value (a table's), which is imputed:
            only infinite values count. Defaults to `False`.

    Returns:
        The row indices, ascending.
    """
    if values.dtype.kind not in "fc":
        return np.empty(0, np.int64)
    flat = values.reshape(len(values), -1)
    test = np.isinf if missing_ok else (lambda block: ~np.isfinite(block))
    bad = [
        start + np.flatnonzero(test(flat[start : start + CHECK_ROWS]).any(axis=1))
        for start in range(0, len(flat), CHECK_ROWS)
    ]
    return np.concatenate(bad) if bad else np.empty(0, np.int64)


def check_finite(
    values: np.ndarray,
    what: str,
    *,
    missing_ok: bool = False,
    where: Callable[[np.ndarray], str] | None = None,
    allowed: str = "Correct or remove them before training; kerastrain does not drop rows silently",
) -> None:
    """Refuses NaN and infinite values, naming the rows that hold them.

    The one check of every input path (arrays, tables, CSV files, datasets,
    regression targets). An infinite value is also what a number beyond
    float32's range (about 3.4e38) becomes when it is read.

    Args:
        values: Numbers, one row per example (any rank).
        what: What the values are, for the message (``"feature values"``,
            ``"values in column 'income' of data.csv"``).
        missing_ok: NaN marks a missing value, which is imputed: only refuse
            infinite values. Defaults to `False`.
        where: Describes the bad rows (``"rows 3, 7 (file lines 5, 9)"``).
            Defaults to `rows`.
        allowed: How to fix it. Defaults to correcting or removing them.

    Raises:
        DataError: ``Rows 3, 7 (2 rows) have infinite feature values ...``.
    """
    bad = nonfinite_rows(values, missing_ok=missing_ok)
    if not len(bad):
        return
    sample = values[bad[:CHECK_ROWS]]
    has_nan = not missing_ok and bool(np.isnan(sample).any())
    has_inf = bool(np.isinf(sample).any())
    kinds = "NaN or infinite" if has_nan and has_inf else "NaN" if has_nan else "infinite"
    note = f" (a number beyond float32's range, +-{FLOAT32_MAX:.3g}, is read as infinite)"
    described = where(bad) if where is not None else f"rows {rows(bad)}"
    raise DataError(
        message(
            f"{described[0].upper()}{described[1:]} have {kinds} {what}"
            + (note if has_inf else ""),
            allowed=allowed,
        )
    )


@dataclasses.dataclass
class Validated:
    """Checked data: float features, integer (or float) labels, and the task."""

    x: np.ndarray
    y: np.ndarray
    task: Task


def _features(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise DataError(
            message(
                "The features are a single value, not one row per example",
                received={"x": x},
                allowed="Pass an array with one row per example, of shape (rows, ...)",
            )
        )
    if x.ndim == 1:
        x = x[:, np.newaxis]
    if 0 in x.shape[1:]:
        raise DataError(
            message(
                f"The features have no values: each of the {len(x)} rows has shape "
                f"{tuple(x.shape[1:])}",
                allowed="Pass at least one feature per row",
            )
        )
    if x.dtype == object or x.dtype.kind in "USb":
        bad = unconvertible_rows(x)
        if len(bad):
            raise DataError(
                message(
                    f"The features must be numbers; rows {rows(bad)} hold values that are not "
                    f"(dtype {x.dtype})",
                    allowed="Convert or remove those values, or pass a DataFrame or CSV file, "
                    "whose text columns kerastrain encodes",
                )
            )
        x = x.astype(np.float32)
    elif x.dtype.kind not in "fiu" and x.dtype != bool:
        raise DataError(
            message(
                "The features must be numbers",
                received={"x.dtype": str(x.dtype)},
                allowed="Pass integers, floats or booleans",
            )
        )
    if x.dtype == np.uint8:
        return x  # pixels: kept as bytes (a quarter of float32), cast per batch
    if x.dtype != np.float32:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
            x = x.astype(np.float32)  # the one copy that a float64 or integer input costs
    check_finite(
        x,
        "feature values",
        allowed="Impute or remove them before training (or pass a DataFrame or CSV "
        "file, whose missing values kerastrain imputes); kerastrain does not drop rows "
        "silently",
    )
    return x


def _labels(y: Any, options: DataConfig, class_names: list[str] | None) -> tuple[np.ndarray, Task]:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:  # one-hot rows
        valid = np.isclose(y.sum(axis=1), 1.0) & ((y == 0) | (y == 1)).all(axis=1)
        if not valid.all():
            raise DataError(
                message(
                    f"The labels are 2-D but rows {rows(np.flatnonzero(~valid))} are not "
                    "one-hot (a single 1 among 0s)",
                    allowed="Pass one-hot rows, or one class index or name per example",
                )
            )
        width = y.shape[1]
        y = y.argmax(axis=1)
        if options.num_classes is None:  # the rows' width says how many classes there are
            options = options.replace(num_classes=max(2, width))
    if y.ndim != 1:
        raise DataError(
            message(
                "The labels must have one value per example (or be one-hot rows)",
                received={"y.shape": y.shape},
            )
        )

    if y.dtype == object or y.dtype.kind in "USb":
        if options.task == "regression":
            bad = unconvertible_rows(y)
            if len(bad):
                raise DataError(
                    message(
                        f"Regression labels must be numbers; rows {rows(bad)} are not",
                        received={"data_options.task": options.task},
                        allowed="Convert or remove them",
                    )
                )
            y = y.astype(np.float32)
        else:
            missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in y])
            if missing.any():
                raise DataError(
                    message(
                        f"Rows {rows(np.flatnonzero(missing))} have no label",
                        allowed="Label or remove them before training",
                    )
                )
            names, y = np.unique(y.astype(str), return_inverse=True)
            class_names = [str(n) for n in names]

    if y.dtype.kind == "f":
        check_finite(y, "labels", allowed="Label or remove them before training")

    integral = y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0))
    kind = options.task
    if kind == "auto":
        distinct = np.unique(y)
        if not integral or (y.dtype.kind == "f" and len(distinct) > MAX_INFERRED_CLASSES):
            kind = "regression"
        elif (
            len(distinct) <= 2
            and set(distinct.tolist()) <= {0, 1}
            and (options.num_classes or 2) == 2
        ):
            kind = "binary"
        else:
            kind = "multiclass"
        logger.info("Task inferred from the labels: %s (%d distinct values).", kind, len(distinct))

    if kind == "regression":
        with np.errstate(over="ignore"):
            targets = y.astype(np.float32)
        check_finite(
            targets,
            "regression targets",
            allowed="Rescale them (targets are trained on in float32), or correct or remove "
            "those rows",
        )
        return targets, Task("regression")
    if not integral:
        bad = np.flatnonzero(np.mod(y, 1) != 0)
        raise DataError(
            message(
                f"Classification labels must be whole class indices; rows {rows(bad)} are not "
                f"(first: {y[bad[0]].item()!r})",
                received={"data_options.task": options.task},
                allowed="Use data_options.task='regression' for continuous targets",
            )
        )
    if y.dtype.kind not in "iu":  # integers (a streamed table's int8 labels) are not widened
        y = y.astype(np.int64)
    negative = np.flatnonzero(y < 0)
    if len(negative):
        raise DataError(
            message(
                f"Class labels must be 0 or more; rows {rows(negative)} are negative "
                f"(first: {y[negative[0]]})",
                allowed="Number the classes from 0, or pass class names",
            )
        )
    num_classes = options.num_classes or (len(class_names) if class_names else int(y.max()) + 1)
    if kind == "binary":
        if options.num_classes not in (None, 2):
            raise DataError(
                message(
                    "data_options.task='binary' needs 2 classes",
                    received={"data_options.num_classes": options.num_classes},
                    allowed="Use data_options.task='multiclass' for more classes",
                )
            )
        num_classes = 2
    outside = np.flatnonzero(y >= num_classes)
    if len(outside):
        raise DataError(
            message(
                f"Rows {rows(outside)} have labels outside the class range 0..{num_classes - 1} "
                f"(first: {y[outside[0]]})",
                received={"data_options.num_classes": options.num_classes},
                allowed="Set data_options.num_classes if there are more classes",
            )
        )
    _check_classes(y, kind, num_classes, class_names, inferred=options.num_classes is None)
    names = tuple(class_names) if class_names and len(class_names) == num_classes else None
    dtype = np.float32 if kind == "binary" else np.int32
    return y.astype(dtype), Task(kind, num_classes, names)


def _check_classes(
    y: np.ndarray, kind: str, num_classes: int, class_names: list[str] | None, inferred: bool
) -> None:
    """Refuses labels of a single class, and class indices with gaps that
    would give the model outputs no example ever trains."""
    present = np.unique(y)
    if len(present) < 2:
        value = int(present[0])
        shown = repr(class_names[value]) if class_names and value < len(class_names) else value
        raise DataError(
            message(
                f"Every label is {shown} (all {len(y)} rows): a classifier needs examples of at "
                "least two classes, and one trained on a single class answers it for everything "
                "(with a perfect score)",
                allowed="Add examples of the other classes, or check that the labels (or "
                "data_options.target) are the right ones",
            )
        )
    if kind != "multiclass" or not inferred or class_names:
        return
    missing = np.setdiff1d(np.arange(num_classes), present)
    if len(missing):
        shown = ", ".join(str(int(c)) for c in missing[:10]) + (
            ", ..." if len(missing) > 10 else ""
        )
        raise DataError(
            message(
                f"The labels are class indices up to {num_classes - 1}, which makes "
                f"{num_classes} classes, but {len(missing)} of them have no example "
                f"(classes {shown}); the labels found are "
                + ", ".join(str(int(c)) for c in present[:10])
                + (", ..." if len(present) > 10 else ""),
                received={"data_options.num_classes": None},
                allowed="Number the classes 0, 1, 2, ... without gaps (e.g. y = np.unique(y, "
                f"return_inverse=True)[1]), or set data_options.num_classes={num_classes} if "
                "those classes exist but this data has no example of them",
            )
        )


def check_labels(
    y: Any, options: DataConfig, class_names: list[str] | None = None
) -> tuple[np.ndarray, Task]:
    """Checks labels alone and infers the task (see `validate`).

    Args:
        y: Class indices, class names, one-hot rows, or numbers.
        options: The data options (`task`, `num_classes`).
        class_names: Names of the classes, when known. Defaults to `None`.

    Returns:
        The labels (int32 classes, float32 for binary and regression) and
        the task.

    Raises:
        DataError: Naming the rows whose labels are missing or do not fit.
    """
    if not hasattr(y, "__len__") or not len(y):
        raise DataError(message("There are no labels", received={"y": y}))
    return _labels(y, options, class_names)


def validate(
    x: Any, y: Any, options: DataConfig, *, class_names: list[str] | None = None
) -> Validated:
    """Checks features and labels and infers the task.

    Args:
        x: Features, one row per example (any rank).
        y: Labels: class indices, class names, one-hot rows, or numbers.
        options: The data options (`task`, `num_classes`).
        class_names: Names of the classes, when the source knows them.
            Defaults to `None`.

    Returns:
        The features as float32 (uint8 arrays stay uint8) and the labels as int32 classes (float32 for
        binary and regression), with the task.

    Raises:
        DataError: For empty data, mismatched lengths, non-numeric or
            non-finite features, or labels that do not fit the task (a
            single class, class indices with gaps, non-finite targets); the
            message names the rows.

    Example:
        >>> validate(np.zeros((4, 2)), [0, 1, 1, 0], DataConfig()).task.kind
        'binary'
    """
    n_x = len(x) if hasattr(x, "__len__") else None
    n_y = len(y) if hasattr(y, "__len__") else None
    if not n_x or not n_y:
        raise DataError(
            message(
                f"The data is empty: {n_x or 0} feature rows and {n_y or 0} labels",
                allowed="Pass at least one row and its label",
            )
        )
    if n_x != n_y:
        raise DataError(
            message(
                f"The features have {n_x} rows but there are {n_y} labels",
                allowed="Each row needs exactly one label",
            )
        )
    features = _features(x)
    labels, task = _labels(y, options, class_names)
    return Validated(features, labels, task)
