"""Evaluation: the evaluate stage, the learning-curve diagnosis, and `evaluate()`.

The stage scores the trained model on its held-out rows with the metric
functions of `kerastrain.metrics` and reads its learning curves for signs
of over- or under-fitting; `evaluate()` scores any model or exported
artifact on new labelled data.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

import kerastrain.data.layers  # noqa: F401 - registers a table model's layers: its .keras/.h5 load
from kerastrain._keras import ensure_tf_keras, keras
from kerastrain.batching import DIRECT_CALL_ROWS, PREDICT_CHUNK_ROWS, predict_batched, predict_model
from kerastrain.config import DataConfig
from kerastrain.data.feed import InMemory, make_dataset
from kerastrain.data.sources import load_data
from kerastrain.data.validate import rows as row_list
from kerastrain.data.validate import validate
from kerastrain.errors import DataError, config_error, message
from kerastrain.export.model_info import read_model_info
from kerastrain.export.predictors import load_predictor
from kerastrain.metrics import compute_metrics, curve_data
from kerastrain.task import Task
from kerastrain.threshold import choose_threshold, metrics_at_threshold, positive_scores

logger = logging.getLogger(__name__)

__all__ = [
    "diagnose",
    "baseline_loss",
    "Finding",
    "Evaluation",
    "evaluate_run",
    "evaluate",
    "infer_task",
    "output_activation",
    "read_labelled",
    "labels_for",
    "TaskArg",
]

#: Relative change below which a loss curve counts as flat.
FLAT = 0.01
#: A final training loss at least this share of the baseline's counts as high.
HIGH = 0.5
#: Validation loss this much (relative) above its minimum counts as rising.
RISE = 0.02


# --------------------------------------------------------------------------- diagnosis


@dataclasses.dataclass(frozen=True)
class Finding:
    """One observation about the learning curves, with the numbers behind it.

    Attributes:
        kind: `"overfitting"`, `"underfitting"`, `"still_improving"`,
            `"good_fit"` or `"too_short"`.
        observation: What the curves show, with numbers.
        suggestion: What to change.
        numbers: The values the observation quotes.
    """

    kind: Literal["overfitting", "underfitting", "still_improving", "good_fit", "too_short"]
    observation: str
    suggestion: str
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)


def baseline_loss(task: Task, y_train: np.ndarray) -> float:
    """The loss of a model that ignores its inputs: the log loss of always
    predicting the training class frequencies (classification), or the
    variance of the training targets (regression, mean squared error).

    Args:
        task: The task.
        y_train: The labels the model trained on.

    Returns:
        The loss, NaN without rows.
    """
    y_train = np.asarray(y_train)
    if len(y_train) == 0:
        return float("nan")
    if task.kind == "regression":
        return float(np.var(y_train.astype(np.float64)))
    share = np.bincount(y_train.astype(np.int64), minlength=task.num_classes) / len(y_train)
    share = share[share > 0]
    return float(-np.sum(share * np.log(share)))


def _relative_drop(values: Sequence[float], window: int) -> float:
    start, end = values[-window - 1], values[-1]
    return (start - end) / max(abs(start), 1e-12)


def diagnose(
    history: Mapping[str, Sequence[float]], *, baseline: float | None = None
) -> list[Finding]:
    """Reads over- and under-fitting off the loss curves.

    - Over-fitting: the validation loss rose more than 2% above its minimum
      and stayed there for at least 2 epochs while the training loss kept
      falling.
    - Under-fitting: the training loss is still at least half the `baseline`
      (or of its first epoch's value without one) and both losses changed by
      less than 1% over the last quarter of the epochs (at least 2).
    - Still improving: the validation (else training) loss fell by more than
      1% over that last stretch and its best value is at the last epoch.
    - Otherwise a good fit, stated with the gap between the two losses.

    Args:
        history: Per-epoch `loss` and, when there was a validation split,
            `val_loss`.
        baseline: The loss of a model that ignores its inputs (see
            `baseline_loss`). Defaults to `None`.

    Returns:
        The findings, most important first (empty without a `loss` curve).

    Example:
        >>> diagnose({"loss": [1.0, .5, .3, .2, .1], "val_loss": [1.0, .6, .7, .8, .9]})[0].kind
        'overfitting'
    """
    train = [float(v) for v in history.get("loss", [])]
    val = [float(v) for v in history.get("val_loss", [])][: len(train)] or None
    n = len(train)
    if n == 0:
        return []
    if n < 3:
        return [
            Finding(
                "too_short",
                f"Only {n} epoch{'s' if n > 1 else ''} logged: too few to "
                "read a trend from the loss curves.",
                "Train for at least 5 epochs (train.epochs) to see the trend.",
                {"epochs": n},
            )
        ]
    findings: list[Finding] = []
    window = max(2, n // 4) if n > 3 else n - 1
    watched = val or train
    name = "validation" if val else "training"
    if val:
        best = int(np.argmin(val))
        after = n - 1 - best
        rose = (val[-1] - val[best]) / max(abs(val[best]), 1e-12)
        if after >= 2 and rose > RISE and train[-1] < train[best]:
            findings.append(
                Finding(
                    "overfitting",
                    f"Over-fitting: validation loss rose from {val[best]:.4g} at epoch {best + 1} to "
                    f"{val[-1]:.4g} at epoch {n} ({rose:+.0%}, {after} epochs) while training loss "
                    f"fell from {train[best]:.4g} to {train[-1]:.4g}.",
                    f"Regularize more (model_options.dropout or l2, weight decay, data augmentation) "
                    f"or stop earlier: train.early_stopping with patience <= {max(1, after - 1)} keeps "
                    f"the weights of epoch {best + 1}.",
                    {
                        "best_epoch": best + 1,
                        "epochs_rising": after,
                        "best_val_loss": val[best],
                        "final_val_loss": val[-1],
                        "train_loss_at_best": train[best],
                        "final_train_loss": train[-1],
                    },
                )
            )
    reference = (
        baseline if baseline is not None and np.isfinite(baseline) and baseline > 0 else train[0]
    )
    reference_name = (
        "the loss of a model that ignores its inputs"
        if reference is baseline
        else "the first epoch's loss"
    )
    ratio = train[-1] / max(reference, 1e-12)
    drops = [_relative_drop(train, window)] + ([_relative_drop(val, window)] if val else [])
    flat = all(abs(d) < FLAT for d in drops)
    if ratio >= HIGH and flat:
        findings.append(
            Finding(
                "underfitting",
                f"Under-fitting: training loss {train[-1]:.4g}"
                + (f" and validation loss {val[-1]:.4g}" if val else "")
                + f" stay at {ratio:.0%} of {reference_name} ({reference:.4g}) and changed by less "
                f"than {FLAT:.0%} over the last {window} epochs.",
                "Give the model more capacity (model_options.width or depth), raise "
                "train.learning_rate, or train longer; lower the regularization if any.",
                {
                    "final_train_loss": train[-1],
                    "reference_loss": reference,
                    "ratio": ratio,
                    "window": window,
                    **({"final_val_loss": val[-1]} if val else {}),
                },
            )
        )
    drop = _relative_drop(watched, window)
    if not findings and drop > FLAT and int(np.argmin(watched)) == n - 1:
        findings.append(
            Finding(
                "still_improving",
                f"Still improving: {name} loss fell from {watched[-window - 1]:.4g} to "
                f"{watched[-1]:.4g} ({-drop:+.1%}) over the last {window} epochs and is lowest at "
                f"the last epoch ({n}).",
                f"Train for more epochs (train.epochs, now {n} run); early stopping stops the run "
                "once the validation loss levels off.",
                {"epochs": n, "window": window, "drop": drop, "final_loss": watched[-1]},
            )
        )
    if not findings:
        gap = (val[-1] - train[-1]) if val else 0.0
        findings.append(
            Finding(
                "good_fit",
                f"No sign of over- or under-fitting: {name} loss settled at {watched[-1]:.4g} "
                f"(best {min(watched):.4g} at epoch {int(np.argmin(watched)) + 1})"
                + (f"; validation minus training loss is {gap:.4g}." if val else "."),
                "No change needed; compare against a larger model to see if capacity is the limit.",
                {"final_loss": watched[-1], "best_loss": min(watched), "gap": gap},
            )
        )
    return findings


# --------------------------------------------------------------------------- run evaluation


@dataclasses.dataclass
class Evaluation:
    """The held-out evaluation of a trained model, for the report.

    Attributes:
        task: The task.
        split: Which rows were scored (`"test"`, `"val"` or `"train"`).
        y_true: Their labels.
        outputs: The model's outputs on them.
        metrics: `compute_metrics` of the two.
        curves: `curve_data` of the two.
        diagnosis: Findings from the learning curves.
        baseline: The loss of a model that ignores its inputs.
        threshold: The binary decision threshold (`evaluate.threshold`):
            `value`, `rule` and the split it was chosen on; None when not asked.
        threshold_metrics: The metrics at that threshold, by split
            (`"val_at_threshold"`, `"test_at_threshold"`); empty when not asked.
    """

    task: Task
    split: str
    y_true: np.ndarray
    outputs: np.ndarray
    metrics: dict[str, Any]
    curves: dict[str, Any]
    diagnosis: list[Finding]
    baseline: float | None = None
    threshold: dict[str, Any] | None = None
    threshold_metrics: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _decision_threshold(
    predict: Any, prepared: Any, threshold: Any, split: str, outputs: np.ndarray
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The chosen (or given) threshold, and the metrics at it on validation
    and test (the held-out split's outputs are reused)."""
    splits = prepared.splits
    scored = {split: outputs}
    for name in ("val", "test"):
        if name not in scored and len(getattr(splits, name)):
            scored[name] = predict(getattr(splits, name))
    if isinstance(threshold, str):
        value = choose_threshold(prepared.y[splits.val], positive_scores(scored["val"]), threshold)
        chosen = {"value": value, "rule": threshold, "chosen_on": "val"}
    else:
        chosen = {"value": float(threshold), "rule": "given", "chosen_on": None}
    metrics = {
        f"{name}_at_threshold": metrics_at_threshold(
            prepared.task, prepared.y[getattr(splits, name)], scored[name], chosen["value"]
        )
        for name in ("val", "test")
        if name in scored
    }
    for name, at in metrics.items():
        split_name = name.removesuffix("_at_threshold")
        half = metrics_at_threshold(
            prepared.task, prepared.y[getattr(splits, split_name)], scored[split_name], 0.5
        )
        logger.info(
            "Decision threshold %.4g (%s): %s f1 %.4f, balanced accuracy %.4f (at 0.5: %.4f, %.4f).",
            chosen["value"],
            chosen["rule"],
            split_name,
            at["f1"],
            at["balanced_accuracy"],
            half["f1"],
            half["balanced_accuracy"],
        )
    return chosen, metrics


def evaluate_run(
    model: Any,
    prepared: Any,
    history: Mapping[str, Sequence[float]],
    threshold: str | float | None = None,
) -> Evaluation:
    """Scores ``model`` on the held-out rows of ``prepared`` and diagnoses its
    learning curves.

    Args:
        model: The trained tf_keras model.
        prepared: The prepared data (`kerastrain.data.prepare.Prepared`).
        history: The training history.
        threshold: `evaluate.threshold` for a binary task: `"f1"` or
            `"balanced_accuracy"` (chosen on the validation split), or a
            number; the metrics at it are added beside those at 0.5.
            Defaults to `None`.

    Returns:
        The evaluation, on the test split (else validation, else training).
    """
    splits = prepared.splits
    split = "test" if len(splits.test) else "val" if len(splits.val) else "train"
    rows = getattr(splits, split)
    y = prepared.y[rows]

    def predict(indices: np.ndarray) -> np.ndarray:
        stream = getattr(prepared.x, "batched", False) and len(indices)
        if stream and np.all(indices[1:] > indices[:-1]):
            return _predict_table_stream(model, prepared, indices)
        # Chunk by chunk: a large data set's split is never copied whole.
        return predict_batched(
            lambda chunk: predict_model(
                model, prepared.rows(chunk), direct_call_rows=DIRECT_CALL_ROWS
            ),
            indices,
            PREDICT_CHUNK_ROWS,
        )

    outputs = predict(rows)
    chosen, at_threshold = None, {}
    if threshold is not None and prepared.task.kind == "binary":
        chosen, at_threshold = _decision_threshold(predict, prepared, threshold, split, outputs)
    # The loss was computed on the targets the model trained on (standardized
    # for regression), so the baseline is too.
    base = baseline_loss(prepared.task, prepared.training_targets[splits.train])
    return Evaluation(
        task=prepared.task,
        split=split,
        y_true=y,
        outputs=outputs,
        metrics=compute_metrics(prepared.task, y, outputs),
        curves=curve_data(prepared.task, y, outputs),
        diagnosis=diagnose(history, baseline=base),
        baseline=base,
        threshold=chosen,
        threshold_metrics=at_threshold,
    )


def _predict_table_stream(model: Any, prepared: Any, indices: np.ndarray) -> np.ndarray:
    """The outputs on the rows ``indices`` (sorted) of a table streamed from
    its files: one `tf.data` pass over the files, which yields an unshuffled
    split's rows in their order; no Python read of the rows, no copy."""
    memory = InMemory(prepared.x, prepared.y)
    dataset = make_dataset(memory, indices, 512, training=False)
    return model.predict(dataset.map(lambda x, y: x), verbose=0)


# --------------------------------------------------------------------------- evaluate()

TaskArg = Task | Literal["auto", "binary", "multiclass", "regression"]


def output_activation(model: Any) -> str | None:
    """The name of the model's last activation (`"softmax"`, `"sigmoid"`,
    `"linear"`), or None when it cannot be read."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def infer_task(
    outputs: np.ndarray,
    y: np.ndarray,
    *,
    activation: str | None = None,
    task: TaskArg = "auto",
    class_names: Sequence[str] | None = None,
) -> Task:
    """The task a model's outputs answer.

    Several output units mean that many classes. One unit is binary when the
    last activation is a sigmoid, regression when it is linear, and otherwise
    (an artifact, whose layers are not visible) binary when the labels are
    text (class names), or when every label is 0 or 1 and every output lies
    in [0, 1].

    Args:
        outputs: The model's outputs on some rows.
        y: The labels of those rows.
        activation: The last activation's name, when known. Defaults to `None`.
        task: A `Task`, or a kind that overrides the inference.
            Defaults to `"auto"`.
        class_names: Class names, used when their count matches.
            Defaults to `None`.

    Returns:
        The task.

    Raises:
        ConfigError: For an unknown `task`.
    """
    if isinstance(task, Task):
        return task
    kinds = ("auto", "binary", "multiclass", "regression")
    if task not in kinds:
        raise config_error("task", task, "a Task or one of " + ", ".join(map(repr, kinds)), kinds)
    outputs = np.asarray(outputs)
    width = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    kind = task
    if kind == "auto":
        if width > 1:
            kind = "multiclass"
        elif activation == "sigmoid":
            kind = "binary"
        elif activation in ("linear", "relu"):
            kind = "regression"
        else:
            labels = np.asarray(y)
            text = labels.dtype.kind in "OUS"  # class names: never a regression's targets
            binary_labels = text or (labels.size > 0 and np.isin(labels, (0, 1)).all())
            in_range = outputs.size == 0 or (outputs.min() >= 0.0 and outputs.max() <= 1.0)
            kind = "binary" if binary_labels and (in_range or text) else "regression"
    num_classes = width if kind == "multiclass" else 2 if kind == "binary" else 1
    names = tuple(class_names) if class_names and len(class_names) == num_classes else None
    return Task(kind, num_classes, names if kind != "regression" else None)


def _as_frame(columns: Mapping[str, Any], y: Any) -> tuple[Any, str]:
    """A table's ``(columns, labels)`` as a DataFrame with a label column, so
    that it is read as a DataFrame is (column names made input names, text
    and missing values kept): `load_data` reads an `(x, y)` pair as arrays."""
    import pandas as pd

    label = "label"
    while label in columns:
        label = f"_{label}"
    lengths = {str(name): len(values) for name, values in columns.items()}
    if len(set(lengths.values()) | {len(y)}) > 1:
        raise DataError(
            message(
                f"The columns and the labels differ in length: {len(y)} labels",
                received={"rows per column": lengths},
                allowed="Give each column exactly one value per label",
            )
        )
    frame = pd.DataFrame({str(name): np.asarray(values) for name, values in columns.items()})
    frame[label] = np.asarray(y)
    return frame, label


def read_labelled(data: Any, target: str | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """Reads labelled rows for evaluating, explaining or ensembling.

    Args:
        data: An `(x, y)` pair (``x`` an array, or a table's dict of
            columns), a built-in data set name, a DataFrame or CSV path (with
            `target`), or a finite `tf.data.Dataset` of `(x, y)`.
        target: The label column of a DataFrame. Defaults to `None`.

    Returns:
        The features (float32, or a table's dict of columns), the labels as
        given, and the `Loaded` record (feature and class names).

    Raises:
        DataError: For data that cannot be read or rows that are not numbers.
    """
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Mapping):
        data, target = _as_frame(*data)
    loaded = load_data(data, DataConfig(target=target))
    y = np.asarray(loaded.y)
    if isinstance(loaded.x, dict):
        x = loaded.x  # a table's columns, checked as they were read (`read_table`)
    else:
        n_x = len(loaded.x) if hasattr(loaded.x, "__len__") else 0
        if n_x != len(y):
            raise DataError(
                message(
                    f"The features have {n_x} rows but there are {len(y)} labels",
                    allowed="Each row needs exactly one label",
                )
            )
        # The features are checked (numbers, finite, bad rows named) with stand-in
        # labels: the task comes from the model's outputs, not from the labels alone.
        x = validate(loaded.x, np.zeros(len(y), np.float32), DataConfig(task="regression")).x
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    return x, y.reshape(len(y)), loaded


def labels_for(task: Task, y: np.ndarray) -> np.ndarray:
    """The labels ``y`` as the task's targets: floats for regression, class
    indices for classification (class names mapped to their index).

    Args:
        task: The task the model answers.
        y: The labels, as read by `read_labelled`.

    Returns:
        float64 targets, or int64 class indices.

    Raises:
        DataError: Naming the rows whose labels are not classes of the task.
    """
    if task.kind == "regression":
        return y.astype(np.float64)
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        if task.class_names and y.dtype.kind in "OUS":
            index = {name: i for i, name in enumerate(task.class_names)}
            unknown = np.flatnonzero([str(v) not in index for v in y])
            if len(unknown):
                raise DataError(
                    message(
                        f"Rows {row_list(unknown)} have labels that are not class names",
                        allowed=f"The model's classes are {', '.join(task.class_names)}",
                    )
                )
            return np.array([index[str(v)] for v in y], np.int64)
        raise DataError(
            message(
                "Classification labels must be class indices",
                received={"y.dtype": str(y.dtype)},
                allowed="Pass integer class indices, or the class names the model knows",
            )
        )
    y = y.astype(np.int64)
    outside = np.flatnonzero((y < 0) | (y >= task.num_classes))
    if len(outside):
        raise DataError(
            message(
                f"Rows {row_list(outside)} have labels outside the model's classes "
                f"0..{task.num_classes - 1} (first: {y[outside[0]]})",
                allowed="Score the model on data labelled with its own classes",
            )
        )
    return y


def evaluate(
    model_or_artifact_path: Any,
    data: Any,
    *,
    task: TaskArg = "auto",
    target: str | None = None,
    batch_size: int = 512,
    trust_model_file: bool = False,
) -> dict[str, Any]:
    """Scores a trained model or an exported artifact on labelled data.

    A model file is read as data before it is loaded, and refused when
    loading it would run code it carries (a `Lambda` layer's Python
    bytecode, file operations in a SavedModel's graph) unless
    `trust_model_file` is True: see the trust model in
    `kerastrain.export.model_files`.

    Args:
        model_or_artifact_path: A tf_keras model, or the path of an artifact
            (a SavedModel folder, a `.keras`/`.h5` file, a `.tflite` file).
        data: `(x, y)` arrays (``x`` may be a table's dict of columns), a
            built-in data set name (`"wine"`), a DataFrame or CSV path with
            `target`, or a finite `tf.data.Dataset` of `(x, y)`.
        task: `"binary"`, `"multiclass"`, `"regression"`, a `Task`, or
            `"auto"`: the task (and class names) the run recorded in the
            `model_info.json` beside an artifact, else read from the model's
            outputs (see `infer_task`). Defaults to `"auto"`.
        target: The label column when `data` is a DataFrame.
            Defaults to `None`.
        batch_size: Rows per prediction call. Defaults to `512`.
        trust_model_file: Load a model file even when it runs code of its
            own (only for files you wrote or whose source you trust).
            Defaults to `False`.

    Returns:
        The metrics of `compute_metrics`, plus `task`.

    Raises:
        ConfigError: For a model that is neither a tf_keras model nor a path,
            or a model file that would run code, not trusted.
        DataError: For data that cannot be scored (rows named).
        ExportError: When the artifact is missing, damaged or cannot be loaded.

    Example:
        >>> m = evaluate("saved_models/run/model.tflite", "digits")  # doctest: +SKIP
        >>> m["accuracy"], m["per_class"]["3"]["f1"]  # doctest: +SKIP
    """
    activation = None
    if isinstance(model_or_artifact_path, (str, os.PathLike)):
        predict = load_predictor(
            model_or_artifact_path, trust=trust_model_file, what="model_or_artifact_path"
        )
        where = os.fspath(model_or_artifact_path)
        info = read_model_info(model_or_artifact_path)
        if info is not None and task == "auto":  # the run recorded its task and class names
            task = info.task
    else:
        ensure_tf_keras(model_or_artifact_path, "model_or_artifact_path")
        if not isinstance(model_or_artifact_path, keras.Model):
            raise config_error(
                "model_or_artifact_path",
                model_or_artifact_path,
                "a tf_keras model or the path of an exported artifact",
            )
        predict = functools.partial(
            predict_model,
            model_or_artifact_path,
            batch_size=batch_size,
            direct_call_rows=DIRECT_CALL_ROWS,
        )
        activation = output_activation(model_or_artifact_path)
        where = model_or_artifact_path.name
    x, y, loaded = read_labelled(data, target)
    outputs = np.asarray(predict(x))
    resolved = infer_task(
        outputs, y, activation=activation, task=task, class_names=loaded.class_names
    )
    metrics = compute_metrics(resolved, labels_for(resolved, y), outputs)
    logger.info(
        "Evaluated %s on %d rows (%s): %s",
        where,
        len(x),
        resolved.kind,
        ", ".join(f"{k}={metrics[k]:.4g}" for k in ("accuracy", "rmse") if k in metrics),
    )
    return {"task": resolved.kind, **metrics}
