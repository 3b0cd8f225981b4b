"""Turning whatever the user passed as ``data`` into arrays.

Every source returns a :class:`Loaded`: the features and labels as NumPy
arrays (no copy when the user's arrays already have a usable dtype), plus what
is known about them (feature and class names, where they came from).

Sources: the scikit-learn sets by name, `(x, y)` arrays, a `tf.data.Dataset`,
a DataFrame or a CSV file (a dict of column arrays, see `tabular`), a folder
of class sub-folders of images (see `images`), and ``"tfds:NAME"`` (see
`tfds`), CSV, Parquet or TFRecord files, one, a glob or a folder of them
(see `table_stream`). Image folders, TFDS sets and file tables too large for
memory come back as a `Stream` in place of the feature array.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.tabular import Table
from kerastrain.data.text import TEXT_COLUMN, is_text_folder, read_text_folder
from kerastrain.data.validate import rows
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = ["Loaded", "load_data", "BUILTIN_DATASETS"]

#: Examples read at a time from a tf.data.Dataset of one example per element.
READ_BATCH = 1024
#: A tf.data.Dataset read logs its progress every this many examples.
PROGRESS_ROWS = 100_000


@dataclasses.dataclass
class Loaded:
    """Data as arrays, before validation.

    Attributes:
        x: Features, one row per example.
        y: Labels, one per row (or one-hot rows).
        source: A short description of where the data came from.
        feature_names: Column names, when the source has them.
        class_names: Class names, when the source has them.
        table: For tables: each column's kind and original name.
        parts: Row indices of splits the source fixes itself (TFDS splits
            named in `tfds_split`), else None.
    """

    x: Any
    y: Any
    source: str
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    table: Any = None
    parts: dict[str, np.ndarray] | None = None


def _sklearn(loader_name: str, *, images: bool = False) -> Callable[[], Loaded]:
    def load() -> Loaded:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        x = np.asarray(bunch.images if images else bunch.data, dtype=np.float32)
        if images:
            x = x[..., np.newaxis]  # (n, h, w) -> (n, h, w, 1)
        names = getattr(bunch, "target_names", None)
        class_names = [str(n) for n in names] if names is not None and x is not None else None
        return Loaded(
            x=x,
            y=np.asarray(bunch.target),
            source=f"scikit-learn {loader_name}",
            feature_names=None if images else [str(f) for f in bunch.feature_names],
            class_names=class_names,
        )

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


def _from_table(x: dict[str, np.ndarray], y: np.ndarray, table: Any, source: str) -> Loaded:
    return Loaded(x=x, y=y, source=source, feature_names=[table.sources[k] for k in x], table=table)


def _from_dataframe(frame: Any, options: DataConfig) -> Loaded:
    from kerastrain.data.tabular import read_table

    source = f"DataFrame {frame.shape}"
    return _from_table(*read_table(frame, options, source=source), source)


def _from_table_files(data: str | os.PathLike, options: DataConfig) -> Loaded | None:
    """CSV, Parquet or TFRecord files (a file, a glob, a folder), in memory or
    streamed; None for a single small CSV file (read as it always was) and
    for anything else."""
    from kerastrain.data.table_files import find_table_files

    tables = find_table_files(data)
    if tables is None:
        return None
    if (
        tables.format == "csv"
        and len(tables.files) == 1
        and options.split_key is None
        and tables.size_mb() <= options.in_memory_mb
    ):
        return None
    from kerastrain.data.table_stream import read_table_files

    x, y, table, parts = read_table_files(tables, options)
    return Loaded(
        x=x,
        y=y,
        source=tables.description,
        feature_names=list(table.sources.values()),
        table=table,
        parts=parts,
    )


def _from_path(data: str | os.PathLike, options: DataConfig) -> Loaded | None:
    files = _from_table_files(data, options)
    if files is not None:
        return files
    path = Path(data)
    if is_text_folder(path):
        x, y, class_names = read_text_folder(path)
        table = Table(columns={TEXT_COLUMN: "text"}, sources={TEXT_COLUMN: TEXT_COLUMN})
        loaded = _from_table(x, y, table, f"text folder {path}")
        return dataclasses.replace(loaded, class_names=class_names)
    if path.is_dir():
        from kerastrain.data.images import read_image_folder

        x, y, class_names = read_image_folder(path, options)
        return Loaded(x=x, y=y, source=f"image folder {path}", class_names=class_names)
    if path.suffix.lower() in (".csv", ".tsv", ".txt") or path.is_file():
        if not path.is_file():
            raise DataError(
                message(
                    "The data file does not exist",
                    received={"data": str(path)},
                    allowed="Check the path (relative paths start at the working directory)",
                )
            )
        from kerastrain.data.tabular import read_csv

        return _from_table(*read_csv(path, options), f"CSV {path}")
    return None


def _leading(shape: Any) -> int | None:
    """The first dimension of a `TensorShape` (None when unknown or scalar)."""
    return shape[0] if shape.rank else None


def _one_hot(y: np.ndarray) -> bool:
    """Whether ``y`` is one one-hot label (a single 1 among 0s)."""
    return y.ndim == 1 and bool(((y == 0) | (y == 1)).all()) and y.sum() == 1


def _batched(spec: Any, xs: list[np.ndarray], ys: list[np.ndarray]) -> bool:
    """Whether the elements read are batches of examples, or examples.

    Batches (`dataset.batch(n)`) have features and labels of one more
    dimension whose size they share, the same in every batch but the last
    (which may be smaller). An unbatched dataset whose features have an open
    first dimension (`from_generator` with a `(None,)` signature) has scalar
    labels, or labels whose first size is not the features', or one-hot
    labels (as long as the features, at times).
    """
    x_spec, y_spec = spec
    if x_spec.shape.rank == 0 or y_spec.shape.rank == 0:
        return False
    known = x_spec.shape.rank is not None and y_spec.shape.rank is not None
    if known and _leading(x_spec.shape) != _leading(y_spec.shape):
        return False
    if any(x.ndim == 0 or y.ndim == 0 or len(x) != len(y) for x, y in zip(xs, ys)):
        return False
    if all(_one_hot(y) for y in ys):
        return False  # examples whose features are as long as their one-hot label
    if _leading(x_spec.shape) is not None:
        return True  # batch(n, drop_remainder=True): a fixed, shared batch size
    sizes = [len(x) for x in xs]
    return all(n == sizes[0] for n in sizes[:-1]) and sizes[-1] <= sizes[0]


def _same_shapes(arrays: list[np.ndarray], what: str, element: str, skip: int) -> None:
    """Refuses elements whose shapes (after the first `skip` axes) differ."""
    first = arrays[0].shape[skip:]
    for i, array in enumerate(arrays):
        if array.shape[skip:] != first:
            raise DataError(
                message(
                    f"{element.capitalize()} {i} of the tf.data.Dataset has {what} of shape "
                    f"{array.shape[skip:]}, but {element} 0 has {first}: every example's "
                    f"{what} must have the same shape",
                    allowed="Pad, crop or resize them to one shape (dataset.map), or pass arrays",
                )
            )


def _read(dataset: Any, limit: int, too_many: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The features and labels of each element, refusing more than ``limit``
    examples (an element counts as a batch when its features and labels
    share their first size)."""
    xs, ys = [], []
    read, reported = 0, 0
    for x, y in dataset.as_numpy_iterator():
        x, y = np.asarray(x), np.asarray(y)
        xs.append(x)
        ys.append(y)
        read += len(x) if x.ndim and y.ndim and len(x) == len(y) else 1
        if read > limit:
            raise DataError(too_many)
        if read - reported >= PROGRESS_ROWS:
            reported = read
            logger.info(
                "Read %d examples of the tf.data.Dataset so far (more than "
                "data_options.max_dataset_rows=%d is refused).",
                read,
                limit,
            )
    return xs, ys


def _from_tf_dataset(dataset: Any, options: DataConfig) -> Loaded:
    from kerastrain._keras import tf

    cardinality = int(dataset.cardinality())
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise DataError(
            message(
                "The tf.data.Dataset is infinite (it repeats)",
                allowed="Pass a finite dataset so that it can be split and validated",
            )
        )
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(
            message(
                f"A tf.data.Dataset must yield (features, label) pairs; its elements are {spec}",
                allowed="Map it to (x, y) pairs, e.g. dataset.map(lambda ex: (ex['image'], "
                "ex['label']))",
            )
        )
    if not all(isinstance(s, tf.TensorSpec) for s in spec):
        raise DataError(
            message(
                "A tf.data.Dataset must yield (features, label) pairs of dense tensors; its "
                f"elements are {spec}",
                allowed="Stack a dict of features into one tensor (dataset.map), or pass a "
                "DataFrame, whose columns kerastrain encodes",
            )
        )
    limit = options.max_dataset_rows
    too_many = message(
        f"The tf.data.Dataset has more than data_options.max_dataset_rows={limit} examples "
        + (
            "(its length is unknown: a generator that never ends?); "
            if cardinality < 0
            else f"({cardinality} elements); "
        )
        + "kerastrain reads a tf.data.Dataset into memory to check and split it",
        allowed="Make the dataset finite (dataset.take(n)), or raise "
        "data_options.max_dataset_rows if the data is that large and fits in memory",
    )
    x_shape, y_shape = spec[0].shape, spec[1].shape
    examples = y_shape.rank == 0 or (  # surely one example per element
        bool(x_shape.rank and y_shape.rank)
        and None not in (_leading(x_shape), _leading(y_shape))
        and _leading(x_shape) != _leading(y_shape)
    )
    if examples and cardinality > limit:
        raise DataError(too_many)  # too many before any is read
    if examples:
        try:  # batched by tf.data, in C++: far faster than element by element
            xs, ys = _read(dataset.batch(READ_BATCH), limit, too_many)
            batched = True
        except tf.errors.InvalidArgumentError:  # elements of unequal shapes: find them
            xs, ys = _read(dataset, limit, too_many)
            batched = False
    else:
        xs, ys = _read(dataset, limit, too_many)
    if not xs:
        raise DataError(
            message(
                "The tf.data.Dataset is empty: it yielded no examples",
                allowed="Pass a dataset with at least one (x, y) pair",
            )
        )
    if not examples:
        batched = _batched(spec, xs, ys)
    element = "batch" if batched else "element"
    _same_shapes(xs, "features", element, skip=int(batched))
    _same_shapes(ys, "labels", element, skip=int(batched))
    x = np.concatenate(xs) if batched else np.stack(xs)
    y = np.concatenate(ys) if batched else np.stack(ys)
    logger.info(
        "Read %d examples from the tf.data.Dataset into memory (%s).",
        len(x),
        f"{len(xs)} batches" if batched and not examples else "one example per element",
    )
    return Loaded(x=x, y=y, source="tf.data.Dataset")


def _array(values: Any, what: str) -> np.ndarray:
    """``np.asarray(values)``, refusing ragged rows (lists of unequal lengths)
    by naming the first row whose shape differs from row 0's."""
    try:
        return np.asarray(values)
    except ValueError:
        shapes = []
        for row in values:
            try:
                shapes.append(np.shape(row))
            except ValueError:
                shapes.append(None)  # itself ragged inside
        bad = np.flatnonzero([shape != shapes[0] for shape in shapes])
        first = int(bad[0]) if len(bad) else 0
        raise DataError(
            message(
                f"The {what} are ragged: rows {rows(bad)} do not have the shape of row 0 "
                f"({shapes[0]}; row {first} has {shapes[first] or 'a ragged shape'})",
                allowed="Give every row the same shape (pad or truncate them), or pass a "
                "DataFrame with one column per feature",
            )
        ) from None


def load_data(data: Any, options: DataConfig) -> Loaded:
    """Reads ``data`` into arrays.

    Args:
        data: `"digits"` or another name in `BUILTIN_DATASETS`, an `(x, y)`
            pair of arrays, a pandas DataFrame or the path of a CSV file (with
            `options.target`), Parquet or TFRecord files (a file, a glob, a
            folder; streamed above `options.in_memory_mb`), a folder of class
            sub-folders of images,
            `"tfds:NAME"`, or a finite `tf.data.Dataset` of `(x, y)` pairs,
            batched or not.
        options: The data options.

    Returns:
        The features and labels, not yet validated.

    Raises:
        DataError: When the data is of a kind kerastrain cannot read, or
            cannot be read (each source names the file, column or rows).

    Example:
        >>> load_data("iris", DataConfig()).x.shape
        (150, 4)
    """
    if isinstance(data, str) and data.startswith("tfds:"):
        from kerastrain.data.tfds import read_tfds

        read = read_tfds(data, options)
        return Loaded(
            x=read.x,
            y=read.y,
            source=read.description,
            class_names=read.class_names,
            parts=read.parts,
        )
    if isinstance(data, str) and data in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[data]()
    if isinstance(data, (str, os.PathLike)):
        loaded = _from_path(data, options)
        if loaded is not None:
            return loaded
        raise DataError(
            message(
                "Unknown data source: not a built-in data set, not 'tfds:NAME', and no file "
                "or folder of that name exists",
                received={"data": str(data)},
                allowed=f"The built-in data sets are {', '.join(BUILTIN_DATASETS)}",
                candidates=BUILTIN_DATASETS,
            )
        )
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        return Loaded(x=_array(x, "features"), y=_array(y, "labels"), source="arrays")
    if type(data).__name__ == "DataFrame":
        return _from_dataframe(data, options)
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        return _from_tf_dataset(data, options)
    raise DataError(
        message(
            f"Cannot read data of type {type(data).__name__}",
            allowed="Pass an (x, y) tuple of arrays, a pandas DataFrame or CSV path with "
            "data_options.target, a folder of class sub-folders of images, 'tfds:NAME', a "
            f"tf.data.Dataset of (x, y), or one of the names {', '.join(BUILTIN_DATASETS)}",
        )
    )
