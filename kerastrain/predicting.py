"""An exported artifact on a data file: the ``kerastrain predict`` and
``kerastrain evaluate`` commands.

Any artifact `kerastrain.export.load_predictor` loads (a SavedModel folder,
`.keras`, `.h5`, `.tflite`, `.onnx`) runs on a CSV, TSV or Parquet file, a
`.npy` array, or a folder of images. The run's `model_info.json` beside the
artifact (`kerastrain.export.model_info`) says what the model takes and
answers: a table's columns are matched by name (the missing and extra ones
named when they differ), an array model's columns by its feature names,
images are resized to the model's input, and the outputs are labelled with
the class names. Without that file (an artifact from elsewhere) the data's
columns are fed as one array, and the outputs are named by class index.

`predictions` gives one row per data row: the predicted ``label`` and one
``probability_<class>`` per class (or the ``value`` of a regression), after
a ``row`` (the data's row, from 0) or ``file`` (an image) column;
`predict_file` writes them to a CSV file.
`evaluate_file` scores labelled data with the metrics of
`kerastrain.evaluate`. Both read and predict ``batch_size`` rows at a time
and log a progress line with the time left every few seconds on large
inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import kerastrain.data.layers  # noqa: F401 - registers a table model's layers: its .h5 loads
from kerastrain.batching import take
from kerastrain.data.images import IMAGE_EXTENSIONS, ImageStream, scan_folder
from kerastrain.data.validate import check_finite, rows
from kerastrain.errors import DataError, message
from kerastrain.evaluation import infer_task, labels_for
from kerastrain.export.model_info import MODEL_INFO, ModelInfo, read_model_info
from kerastrain.export.predictors import load_predictor
from kerastrain.files import atomic_path
from kerastrain.logs import Progress
from kerastrain.metrics import class_names, class_probabilities, compute_metrics
from kerastrain.task import Task
from kerastrain.threshold import metrics_at_threshold, positive_scores

logger = logging.getLogger(__name__)

__all__ = [
    "Rows",
    "read_rows",
    "predictions",
    "predict_file",
    "evaluate_file",
    "format_metrics",
    "default_output",
    "TABLE_SUFFIXES",
]

#: Files read as tables (a header row, one column per feature).
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
#: Seconds between two progress lines.
PROGRESS_SECONDS = 5.0
#: Rows read and predicted at a time, by default.
BATCH_ROWS = 512


@dataclasses.dataclass
class Rows:
    """Data read for the model.

    Attributes:
        x: Inputs: an array, a dict of columns, or an `ImageStream`.
        y: The labels (`evaluate`), else None.
        ids: Each row's name: its position, or its file for images.
        id_name: `"row"` or `"file"`.
        source: What was read, for messages.
        dtype: The dtype decoded images are given to the model in.
    """

    x: Any
    y: np.ndarray | None
    ids: list[Any]
    id_name: str
    source: str
    dtype: str = "float32"

    def __len__(self) -> int:
        return len(self.ids)

    def chunk(self, start: int, stop: int) -> Any:
        """Rows ``start:stop`` as the model takes them."""
        if isinstance(self.x, ImageStream):
            return self.x.read(np.arange(start, stop)).astype(self.dtype)
        return take(self.x, start, stop)


# --------------------------------------------------------------------------- reading


def _refuse_missing_path(path: Path) -> None:
    if not path.exists():
        raise DataError(
            message(
                "The data file does not exist",
                received={"DATA": str(path)},
                allowed="Check the path (relative paths start at the working directory)",
            )
        )


def _frame(path: Path) -> Any:
    """The file as a DataFrame; an empty file or one without rows refused."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise DataError(
            message(
                f"The data file {str(path)!r} is empty",
                allowed="Give a file with a header row and at least one row of values",
            )
        )
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            message(
                f"The data file {str(path)!r} is empty (no header row)",
                allowed="Give a file with a header row and at least one row of values",
            )
        ) from None
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as exc:
        raise DataError(
            message(
                f"Cannot read the data file {str(path)!r}: {type(exc).__name__}: {exc}",
                allowed="Give a CSV file with a header row (tab-separated when it ends in "
                ".tsv) or a Parquet file",
            )
        ) from None
    if len(frame) == 0:
        raise DataError(
            message(
                f"The data file {str(path)!r} has a header but no rows",
                received={"columns": [str(c) for c in frame.columns][:10]},
                allowed="Give at least one row of values",
            )
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _expected_columns(info: ModelInfo | None) -> list[str] | None:
    """The data columns the model reads, in its order (None: all, as one array)."""
    if info is None:
        return None
    if info.is_table:
        return [i.column or i.name for i in info.inputs]
    return list(info.feature_names) if info.feature_names else None


def _numbers(values: np.ndarray, column: str, source: str, line_offset: int | None) -> np.ndarray:
    """A column as float32, missing values as NaN; a value that is not a number refused."""
    import pandas as pd

    missing = pd.isna(values)
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(np.isnan(numbers) & ~missing)
    if len(bad):
        lines = (
            ""
            if line_offset is None
            else f"file lines {', '.join(str(int(i) + line_offset) for i in bad[:5])}; "
        )
        raise DataError(
            message(
                f"Column {column!r} of {source} holds values that are not numbers in rows "
                f"{rows(bad)} ({lines}first: {values[bad[0]]!r}), and the model takes numbers "
                "there",
                allowed="Correct them, or leave them empty to have them imputed",
            )
        )
    with np.errstate(over="ignore"):
        return numbers.astype(np.float32)


def _text(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return np.array(["" if m else str(v) for v, m in zip(values, pd.isna(values))], dtype=object)


def _table_inputs(
    frame: Any, info: ModelInfo, source: str, line_offset: int | None
) -> dict[str, Any]:
    x = {}
    for spec in info.inputs:
        column = spec.column or spec.name
        values = frame[column].to_numpy()
        if spec.dtype == "string":
            x[spec.name] = _text(values)
        else:
            x[spec.name] = _numbers(values, column, source, line_offset)
            check_finite(
                x[spec.name],
                f"values in column {column!r} of {source}",
                missing_ok=True,
                allowed="Correct them, or leave them empty to have them imputed",
            )
    return x


def _array_input(
    frame: Any, info: ModelInfo | None, source: str, line_offset: int | None
) -> np.ndarray:
    columns = [_numbers(frame[c].to_numpy(), c, source, line_offset) for c in frame.columns]
    x = np.stack(columns, axis=1)
    check_finite(
        x,
        f"values of {source}",
        allowed="This model has no imputation inside it: fill or remove the missing values",
    )
    if info is not None and len(info.inputs) == 1:
        shape = info.inputs[0].shape
        if None not in shape and int(np.prod(shape)) != x.shape[1]:
            raise DataError(
                message(
                    f"{source} has {x.shape[1]} columns but the model takes "
                    f"{int(np.prod(shape))} values per row (shape {tuple(shape)})",
                    allowed="Give one column per value, in the model's order",
                )
            )
        if None not in shape:
            x = x.reshape(len(x), *shape)
    return x


def _read_table(path: Path, info: ModelInfo | None, target: str | None) -> Rows:
    frame = _frame(path)
    source = repr(str(path))
    line_offset = None if path.suffix.lower() == ".parquet" else 2  # a CSV's header is line 1
    y = None
    if target is not None:
        if target not in frame.columns:
            raise DataError(
                message(
                    f"The label column {target!r} is not in {source}",
                    allowed=f"Its columns are {_names(list(frame.columns), 20)}; name the label "
                    "column with --target",
                    candidates=list(frame.columns),
                    near=target,
                )
            )
        y = frame[target].to_numpy()
        frame = frame.drop(columns=[target])
    expected = _expected_columns(info)
    if expected is not None:
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        if missing:
            raise DataError(
                message(
                    f"The columns of {source} do not match the model's inputs: missing "
                    f"{_names(missing)}"
                    + (f"; extra (not inputs of the model) {_names(extra)}" if extra else ""),
                    allowed=f"The model reads the columns {_names(expected, 20)}"
                    + (f" (from {info.path})" if info and info.path else ""),
                )
            )
        unread = [c for c in extra if info is None or c != info.target]  # labels are expected
        if unread:
            logger.warning(
                "%s: ignored %d columns the model does not read: %s",
                source,
                len(unread),
                _names(unread),
            )
        frame = frame[expected]
    if info is not None and info.is_table:
        x: Any = _table_inputs(frame, info, source, line_offset)
    else:
        x = _array_input(frame, info, source, line_offset)
    return Rows(x, y, list(range(len(frame))), "row", source)


def _read_npy(path: Path, info: ModelInfo | None) -> Rows:
    source = repr(str(path))
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            message(
                f"Cannot read the array file {source}: {type(exc).__name__}: {exc}",
                allowed="Give a .npy file written by numpy.save (object arrays are refused)",
            )
        ) from None
    if info is not None and info.is_table:
        raise DataError(
            message(
                f"The model takes a table's named columns; {source} is an unnamed array",
                allowed="Give a CSV or Parquet file with the columns "
                f"{_names([i.column or i.name for i in info.inputs])}",
            )
        )
    if x.ndim == 0 or len(x) == 0:
        raise DataError(
            message(
                f"The array file {source} has no rows",
                received={"shape": tuple(x.shape)},
                allowed="Give an array of shape (rows, ...) with at least one row",
            )
        )
    if info is not None and len(info.inputs) == 1:
        shape = info.inputs[0].shape
        ok = len(shape) == x.ndim - 1 and all(
            d is None or d == n for d, n in zip(shape, x.shape[1:])
        )
        if not ok:
            raise DataError(
                message(
                    f"The rows of {source} have shape {tuple(x.shape[1:])}; the model takes "
                    f"{tuple(shape)}",
                    received={"shape": tuple(x.shape)},
                    allowed=f"Give an array of shape (rows, {', '.join(map(str, shape))})",
                )
            )
        x = x.astype(info.inputs[0].dtype) if x.dtype.kind in "fiub" else x
    return Rows(x, None, list(range(len(x))), "row", source)


def _image_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _read_images(root: Path, info: ModelInfo | None, labelled: bool) -> Rows:
    source = f"the image folder {str(root)!r}"
    shape = info.inputs[0].shape if info is not None and len(info.inputs) == 1 else ()
    if len(shape) != 3 or None in shape[:2]:
        raise DataError(
            message(
                f"{source} cannot be read for this model: the size its images are resized to is "
                f"unknown (no {MODEL_INFO} beside the artifact recording an image input)",
                allowed="Use an artifact exported by kerastrain from an image model, or give "
                "the images as a .npy array of the model's input shape",
            )
        )
    y = None
    if labelled:
        folder = scan_folder(root)
        files = [Path(p) for p in folder.paths]
        y = np.array(folder.class_names)[folder.labels]  # class names, mapped by the task
    else:
        files = _image_files(root)
        if not files:
            raise DataError(
                message(
                    f"{source} holds no image (PNG, JPEG, GIF or BMP)",
                    allowed="Give a folder of images (sub-folders are read too)",
                )
            )
    stream = ImageStream([str(f) for f in files], (shape[0], shape[1]), shape[2], source)
    ids = [str(f.relative_to(root)) for f in files]
    return Rows(stream, y, ids, "file", source, dtype=info.inputs[0].dtype)


def read_rows(
    data: str | os.PathLike,
    info: ModelInfo | None,
    *,
    target: str | None = None,
    labelled: bool = False,
) -> Rows:
    """Reads a data file as the model described by ``info`` takes it.

    Args:
        data: A CSV/TSV/Parquet file, a `.npy` file, or a folder of images
            (of class sub-folders when `labelled`).
        info: The model's `model_info.json`, or None.
        target: The label column of a table. Defaults to `None`.
        labelled: Read labels too (a table's `target`, an image folder's
            class sub-folders). Defaults to `False`.

    Returns:
        The rows.

    Raises:
        DataError: For a missing, empty or unreadable file, columns that do
            not match the model's inputs (the missing and extra ones named),
            values that are not numbers (rows named), or a missing `target`.
    """
    path = Path(data)
    _refuse_missing_path(path)
    if path.is_dir():
        return _read_images(path, info, labelled)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if labelled:
            raise DataError(
                message(
                    f"{str(path)!r} is an array without labels: evaluating needs them",
                    allowed="Give a CSV or Parquet file with a label column (--target), or a "
                    "folder of class sub-folders of images",
                )
            )
        return _read_npy(path, info)
    if suffix in TABLE_SUFFIXES:
        if labelled and target is None:
            raise DataError(
                message(
                    f"No label column is known for {str(path)!r}",
                    allowed="Name it with --target (the run's model_info.json records the "
                    "column it trained on, when it had one)",
                )
            )
        return _read_table(path, info, target)
    raise DataError(
        message(
            f"Cannot read {str(path)!r}: unknown kind of data file",
            received={"suffix": suffix or "(none)"},
            allowed="Give a .csv, .tsv or .parquet table, a .npy array, or a folder of images",
        )
    )


# --------------------------------------------------------------------------- predicting


def _outputs(predict: Callable[[Any], np.ndarray], data: Rows, batch_size: int) -> np.ndarray:
    progress = Progress(
        logger, f"Predicting {data.source}:", len(data), unit="rows", every=PROGRESS_SECONDS
    )
    outputs = []
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        chunk = data.chunk(start, stop)
        try:
            outputs.append(np.asarray(predict(chunk)))
        except DataError:
            raise
        except Exception as exc:  # the artifact refused the rows: say which and why
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataError(
                message(
                    f"The model could not run on rows {start}..{stop - 1} of {data.source}: "
                    f"{type(exc).__name__}: {first}",
                    received={"rows": _describe(chunk)},
                    allowed="Give the inputs the model was trained on (the run's "
                    f"{MODEL_INFO} beside the artifact lets kerastrain match them by name)",
                )
            ) from None
        progress.update(stop)
    return np.concatenate(outputs)


def _describe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: f"{np.asarray(v).dtype} {np.asarray(v).shape}" for k, v in x.items()}
    return f"{np.asarray(x).dtype} {np.asarray(x).shape}"


def _load(
    artifact: str | os.PathLike, trust: bool, batch_size: int
) -> tuple[Callable, ModelInfo | None]:
    predict = load_predictor(artifact, trust=trust, what="ARTIFACT", batch_size=batch_size)
    info = read_model_info(artifact)
    if info is None:
        logger.warning(
            "No %s beside %s: the data's columns are fed as one array and the outputs are "
            "named by class index.",
            MODEL_INFO,
            artifact,
        )
    return predict, info


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(
            message(
                "The batch size must be at least 1",
                received={"--batch-size": batch_size},
                allowed="Give a positive number of rows",
            )
        )


def _table(
    task: Task | None, outputs: np.ndarray, data: Rows, threshold: float | None = None
) -> Any:
    import pandas as pd

    columns: dict[str, Any] = {data.id_name: data.ids}
    width = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    if task is None and width > 1:
        task = Task("multiclass", width)
    if task is None:
        columns["output"] = outputs.reshape(len(outputs))
    elif task.kind == "regression":
        columns["value"] = outputs.reshape(len(outputs), -1)[:, 0]
    else:
        proba = class_probabilities(task, outputs)
        names = class_names(task)
        chosen = proba.argmax(axis=1)
        if threshold is not None and task.kind == "binary":  # the run's chosen cut
            chosen = (positive_scores(outputs) >= threshold).astype(np.int64)
        columns["label"] = np.array(names, dtype=object)[chosen]
        for i, name in enumerate(names):
            columns[f"probability_{name}"] = proba[:, i]
    return pd.DataFrame(columns)


def default_output(data: str | os.PathLike) -> Path:
    """``<data>.predictions.csv`` beside the data (`rows.csv` ->
    `rows.predictions.csv`, the folder `photos/` -> `photos.predictions.csv`)."""
    path = Path(data).resolve()
    stem = path.name if path.is_dir() else path.stem
    return path.with_name(f"{stem}.predictions.csv")


def predictions(
    artifact: str | os.PathLike,
    data: str | os.PathLike,
    *,
    batch_size: int = BATCH_ROWS,
    trust: bool = False,
) -> Any:
    """An artifact's predictions on a data file, one row per data row.

    Args:
        artifact: Any artifact `load_predictor` loads.
        data: A CSV/TSV/Parquet file, a `.npy` file, or a folder of images.
        batch_size: Rows read and predicted at a time. Defaults to `512`.
        trust: Load a model file even when it would run code it carries.
            Defaults to `False`.

    Returns:
        A DataFrame: `row` (or `file`), `label` and one `probability_<class>`
        per class, or `value` for a regression (`output` when the task is
        unknown).

    Raises:
        DataError: For data the model cannot take (see `read_rows`).
        ExportError: For an artifact that is missing, damaged or not a model.
        ConfigError: For a model file that would run code, not trusted.
    """
    _check_batch_size(batch_size)
    predict, info = _load(artifact, trust, batch_size)
    data_rows = read_rows(data, info)
    outputs = _outputs(predict, data_rows, batch_size)
    return _table(info.task if info else None, outputs, data_rows, info.threshold if info else None)


def predict_file(
    artifact: str | os.PathLike,
    data: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    batch_size: int = BATCH_ROWS,
    trust: bool = False,
) -> Path:
    """Writes `predictions` to a CSV file, atomically.

    Args:
        artifact: Any artifact `load_predictor` loads.
        data: A CSV/TSV/Parquet file, a `.npy` file, or a folder of images.
        output: The CSV to write. Defaults to `default_output(data)`.
        batch_size: Rows read and predicted at a time. Defaults to `512`.
        trust: Load a model file even when it would run code it carries.
            Defaults to `False`.

    Returns:
        The file written.

    Raises:
        DataError: As `predictions`, and for an output path that is the data
            itself (checked before anything is loaded).
        ExportError: For an artifact that is missing, damaged or not a model.
        ConfigError: For a model file that would run code, not trusted.
    """
    target = default_output(data) if output is None else Path(output)
    if Path(data).exists() and target.resolve() == Path(data).resolve():
        raise DataError(
            message(
                "The output file is the data file: it would be written over",
                received={"--output": str(target)},
                allowed="Give another path (default: <data>.predictions.csv)",
            )
        )
    table = predictions(artifact, data, batch_size=batch_size, trust=trust)
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    logger.info("Wrote the predictions of %d rows to %s.", len(table), target)
    return target


def evaluate_file(
    artifact: str | os.PathLike,
    data: str | os.PathLike,
    *,
    target: str | None = None,
    batch_size: int = BATCH_ROWS,
    trust: bool = False,
) -> dict[str, Any]:
    """Scores an artifact on a labelled data file, as `kerastrain.evaluate` does.

    Args:
        artifact: Any artifact `load_predictor` loads.
        data: A CSV/TSV/Parquet file with a label column, or a folder of
            class sub-folders of images.
        target: The label column. Defaults to the one the run trained on
            (`model_info.json`).
        batch_size: Rows read and predicted at a time. Defaults to `512`.
        trust: Load a model file even when it would run code it carries.
            Defaults to `False`.

    Returns:
        The metrics of `compute_metrics`, plus `task`, `examples` and `data`.

    Raises:
        DataError: For data that cannot be scored (see `read_rows`; labels
            that are not the model's classes, rows named).
        ExportError: For an artifact that is missing, damaged or not a model.
        ConfigError: For a model file that would run code, not trusted.
    """
    _check_batch_size(batch_size)
    predict, info = _load(artifact, trust, batch_size)
    target = target or (info.target if info else None)
    data_rows = read_rows(data, info, target=target, labelled=True)
    outputs = _outputs(predict, data_rows, batch_size)
    y = np.asarray(data_rows.y)
    task = info.task if info else infer_task(outputs, y)
    labels = labels_for(task, y)
    metrics = compute_metrics(task, labels, outputs)
    if info is not None and info.threshold is not None and task.kind == "binary":
        # beside the metrics at 0.5, as `result.metrics["test_at_threshold"]`
        metrics["at_threshold"] = metrics_at_threshold(task, labels, outputs, info.threshold)
    return {"task": task.kind, "artifact": str(artifact), "data": str(data), **metrics}


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as a plain-text table: the scores, then per class and the
    confusion matrix for classification."""
    scalars = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float, np.integer, np.floating)) or v is None
    }
    lines = [
        f"{metrics.get('artifact', 'The model')} on {metrics.get('data', 'the data')}: "
        f"{metrics.get('task', '')} task, {metrics.get('examples', '?')} rows"
    ]
    width = max(len(k) for k in scalars)
    for key, value in scalars.items():
        if key == "examples":
            continue
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        lines.append(f"  {key:<{width}}  {shown}")
    per_class = metrics.get("per_class")
    if per_class:
        name_width = max(len(str(n)) for n in per_class)
        lines.append(f"  {'class':<{name_width}}  precision  recall      f1  support")
        for name, row in per_class.items():
            lines.append(
                f"  {str(name):<{name_width}}  "
                + "  ".join(
                    f"{'n/a' if row[k] is None else format(row[k], '.4f'):>{w}}"
                    for k, w in (("precision", 9), ("recall", 6), ("f1", 6))
                )
                + f"  {row['support']:>7}"
            )
    matrix = metrics.get("confusion_matrix")
    if matrix:
        lines.append("  confusion matrix (rows: true class, columns: predicted)")
        lines.extend("    " + " ".join(f"{v:>6}" for v in row) for row in matrix)
    cut = metrics.get("at_threshold")
    if cut:
        lines.append(f"  at the run's decision threshold {cut['threshold']:.4g} (not 0.5):")
        lines.extend(
            f"    {key:<{width}}  {cut[key]:.4f}"
            for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1")
            if cut.get(key) is not None
        )
    return "\n".join(lines)
