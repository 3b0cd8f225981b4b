"""Turning whatever the user passed as ``data`` into arrays.

Every source returns a :class:`Loaded`: the features and labels as NumPy
arrays (no copy when the user's arrays already have a usable dtype), plus what
is known about them (feature and class names, where they came from).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.validate import rows as _rows
from kerastrain.data.validate import unconvertible_rows as _unconvertible_rows
from kerastrain.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["Loaded", "load_data", "BUILTIN_DATASETS"]


@dataclasses.dataclass
class Loaded:
    """Data as arrays, before validation.

    Attributes:
        x: Features, one row per example.
        y: Labels, one per row (or one-hot rows).
        source: A short description of where the data came from.
        feature_names: Column names, when the source has them.
        class_names: Class names, when the source has them.
    """

    x: Any
    y: Any
    source: str
    feature_names: list[str] | None = None
    class_names: list[str] | None = None


def _sklearn(loader_name: str, *, images: bool = False) -> Callable[[], Loaded]:
    def load() -> Loaded:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        x = np.asarray(bunch.images if images else bunch.data, dtype=np.float32)
        if images:
            x = x[..., np.newaxis]  # (n, h, w) -> (n, h, w, 1)
        names = getattr(bunch, "target_names", None)
        class_names = [str(n) for n in names] if names is not None and x is not None else None
        return Loaded(x=x, y=np.asarray(bunch.target), source=f"scikit-learn {loader_name}",
                      feature_names=None if images else [str(f) for f in bunch.feature_names],
                      class_names=class_names)
    return load


#: Data sets shipped with scikit-learn, usable offline by name.
#: ``"digits"`` (8x8 grayscale images of handwritten digits) is the default.
BUILTIN_DATASETS: dict[str, Callable[[], Loaded]] = {
    "digits": _sklearn("load_digits", images=True),
    "iris": _sklearn("load_iris"),
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes"),
}


def _from_dataframe(frame: Any, options: DataConfig) -> Loaded:
    target = options.target
    if target is None:
        raise DataError(
            "The data is a DataFrame but no label column was named: set "
            f"data_options.target to one of its columns ({', '.join(map(str, frame.columns[:10]))}"
            f"{', ...' if len(frame.columns) > 10 else ''}).")
    if target not in frame.columns:
        from kerastrain.config.base import did_you_mean

        raise DataError(
            f"The label column data_options.target={target!r} is not in the DataFrame; "
            f"its columns are {', '.join(map(str, frame.columns[:20]))}."
            + did_you_mean(target, map(str, frame.columns)))
    features = frame.drop(columns=[target])
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    non_numeric = [c for c in features.columns
                   if not (is_numeric_dtype(features[c]) or is_bool_dtype(features[c]))]
    if non_numeric:
        column = non_numeric[0]
        bad = _unconvertible_rows(features[column].to_numpy())
        raise DataError(
            f"Column {column!r} is not numeric (dtype {features[column].dtype}); rows "
            f"{_rows(bad)} hold values that are not numbers (first: "
            f"{features[column].iloc[bad[0]]!r})." if len(bad) else
            f"Column {column!r} is not numeric (dtype {features[column].dtype}).")
    x = features.to_numpy(dtype=np.float32)
    return Loaded(x=x, y=frame[target].to_numpy(), source=f"DataFrame {frame.shape}",
                  feature_names=[str(c) for c in features.columns])


def _from_tf_dataset(dataset: Any) -> Loaded:
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise DataError("The tf.data.Dataset is infinite (it repeats); pass a finite dataset "
                        "so that it can be split and validated.")
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError("A tf.data.Dataset must yield (features, label) pairs; its elements are "
                        f"{spec}.")
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError("The tf.data.Dataset is empty: it yielded no examples.")
    batched = spec[0].shape.rank is not None and spec[1].shape.rank is not None and (
        spec[0].shape.rank >= 1 and spec[0].shape[0] is None)
    x = np.concatenate(xs) if batched else np.stack(xs)
    y = np.concatenate(ys) if batched else np.stack(ys)
    logger.info("Read %d examples from the tf.data.Dataset into memory.", len(x))
    return Loaded(x=x, y=y, source="tf.data.Dataset")


def load_data(data: Any, options: DataConfig) -> Loaded:
    """Reads ``data`` into arrays.

    Args:
        data: `"digits"` or another name in `BUILTIN_DATASETS`, an `(x, y)`
            pair of arrays, a pandas DataFrame (with `options.target`), or a
            finite `tf.data.Dataset` of `(x, y)` pairs, batched or not.
        options: The data options.

    Returns:
        The features and labels, not yet validated.

    Raises:
        DataError: When the data is of a kind kerastrain cannot read.

    Example:
        >>> load_data("iris", DataConfig()).x.shape
        (150, 4)
    """
    if isinstance(data, str):
        if data in BUILTIN_DATASETS:
            return BUILTIN_DATASETS[data]()
        from kerastrain.config.base import did_you_mean

        raise DataError(
            f"Unknown data source {data!r}. A string names a built-in data set: "
            f"{', '.join(BUILTIN_DATASETS)}." + did_you_mean(data, BUILTIN_DATASETS))
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        return Loaded(x=np.asarray(x), y=np.asarray(y), source="arrays")
    if type(data).__name__ == "DataFrame":
        return _from_dataframe(data, options)
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        return _from_tf_dataset(data)
    raise DataError(
        f"Cannot read data of type {type(data).__name__}. Pass an (x, y) tuple of arrays, a "
        "pandas DataFrame with data_options.target, a tf.data.Dataset of (x, y), or one of "
        f"the names {', '.join(BUILTIN_DATASETS)}.")

