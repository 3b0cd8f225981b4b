"""Metric functions: scores, curves and calibration from labels and model outputs.

Everything here works on NumPy arrays of labels and model outputs, so the
Keras model and every exported artifact are scored by the same code.
scikit-learn computes every metric it has; only the expected calibration
error is summed here, from scikit-learn's own reliability bins. Nothing here
imports a stage: only NumPy, scikit-learn and the `Task`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from kerastrain.task import Task

__all__ = [
    "compute_metrics",
    "label_metrics",
    "predicted_classes",
    "class_probabilities",
    "class_names",
    "normalized",
    "reliability",
    "curve_data",
    "agreement",
    "TOP_K",
    "CALIBRATION_BINS",
    "REGRESSION_AGREEMENT_RTOL",
]

#: Top-k accuracy is reported with this k when there are more than 5 classes.
TOP_K = 3
TOP_K_MIN_CLASSES = 6
#: Equal-width confidence bins of the reliability diagram and the ECE.
CALIBRATION_BINS = 10
#: The share of the output range within which a quantized regression output
#: counts as agreeing with the Keras model's.
REGRESSION_AGREEMENT_RTOL = 0.05


def class_probabilities(task: Task, outputs: np.ndarray) -> np.ndarray:
    """``(n, classes)`` probabilities from the model's outputs.

    A binary task's outputs are the positive class's probability, one per
    row, or already two columns (a 2-unit softmax), which are kept.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    table = outputs.reshape(len(outputs), -1)
    if task.kind == "binary" and table.shape[1] != 2:
        p = outputs.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return table


def predicted_classes(task: Task, outputs: np.ndarray) -> np.ndarray:
    """The predicted class of each row (classification tasks)."""
    return class_probabilities(task, outputs).argmax(axis=1)


def normalized(proba: np.ndarray) -> np.ndarray:
    """``proba`` clipped at 0 and each row rescaled to sum to exactly 1.

    float32 softmax rows (and TFLite's) sum to 1 only within ~1e-7;
    scikit-learn's log loss wants them exact.
    """
    proba = np.clip(proba, 0.0, None)
    return proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)


def class_names(task: Task) -> list[str]:
    """The task's class names, or the class indices as strings."""
    return list(task.class_names) if task.class_names else [str(i) for i in range(task.num_classes)]


def compute_metrics(task: Task, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    """Scores predictions for the task.

    Classification: `accuracy`, `balanced_accuracy`; `precision`, `recall`
    and `f1` (macro averages) with their `_weighted` twins and `per_class`
    values; `roc_auc` (one-vs-rest macro for several classes) and `pr_auc`
    (average precision), both `None` when a class has no example in `y_true`
    (they are undefined then); `log_loss`; `ece` (expected calibration error
    over `CALIBRATION_BINS` bins); `top_3_accuracy` when there are more than
    5 classes; `confusion_matrix` (counts, rows the true classes) and
    `confusion_matrix_normalized` (each row divided by its count).
    Regression: `mae`, `rmse`, `r2`. Both: `examples`.

    Each value is scikit-learn's for the same labels and probabilities
    (`tests/conformance/` checks them), with two conventions of its own:

    - `precision`, `recall` and `f1` are macro averages for binary tasks too,
      not scikit-learn's default `average="binary"` (the positive class
      only): binary and multi-class runs then read the same, and a poor
      negative class cannot hide behind a good positive one. The
      positive-class values are `per_class[<positive class>]`.
    - Binary `ece` bins the positive class's probability (see `reliability`),
      not the top-label confidence of the calibration papers.

    The `auc` Keras logs during training (`val_auc`) is tf_keras's AUC over
    200 thresholds, an approximation; `roc_auc` here is exact.

    Args:
        task: The task.
        y_true: True labels (class indices, or targets).
        outputs: The model's outputs for the same rows.

    Returns:
        A JSON-ready mapping of metric names to values.

    Example:
        >>> outputs = np.array([[0.2], [0.9]])
        >>> compute_metrics(Task("binary", 2), np.array([0, 1]), outputs)["accuracy"]
        1.0
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return {}
    if task.kind == "regression":
        pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return {
            "mae": float(skm.mean_absolute_error(y_true, pred)),
            "rmse": float(skm.root_mean_squared_error(y_true, pred)),
            "r2": float(skm.r2_score(y_true, pred)),
            "examples": int(len(y_true)),
        }
    y_true = y_true.astype(np.int64)
    proba = normalized(class_probabilities(task, outputs))
    y_pred = proba.argmax(axis=1)
    labels = list(range(task.num_classes))
    result = label_metrics(task, y_true, y_pred)
    result["roc_auc"] = _roc_auc(task, y_true, proba)
    result["pr_auc"] = _pr_auc(task, y_true, proba)
    result["log_loss"] = float(skm.log_loss(y_true, proba, labels=labels))
    result["ece"] = reliability(task, y_true, proba)["ece"]
    if task.num_classes >= TOP_K_MIN_CLASSES:
        result[f"top_{TOP_K}_accuracy"] = float(
            skm.top_k_accuracy_score(y_true, proba, k=TOP_K, labels=labels)
        )
    result["confusion_matrix_normalized"] = skm.confusion_matrix(
        y_true, y_pred, labels=labels, normalize="true"
    ).tolist()
    return result


def label_metrics(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """The metrics of predicted labels (no probabilities): accuracy, balanced
    accuracy, macro and weighted precision, recall and F1, each class's, the
    confusion matrix and the number of examples. `compute_metrics` and the
    metrics at a decision threshold both use it.

    Args:
        task: A classification task (its classes and their names).
        y_true: Class indices.
        y_pred: Predicted class indices.

    Returns:
        A JSON-ready dict.
    """
    from sklearn import metrics as skm

    labels = list(range(task.num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        result: dict[str, Any] = {
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        suffix = "" if average == "macro" else "_weighted"
        result.update(
            {f"precision{suffix}": float(p), f"recall{suffix}": float(r), f"f1{suffix}": float(f)}
        )
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names(task))
    }
    result["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    result["examples"] = int(len(y_true))
    return result


def _all_classes_present(task: Task, y_true: np.ndarray) -> bool:
    return len(np.unique(y_true)) == task.num_classes


def _roc_auc(task: Task, y_true: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not _all_classes_present(task, y_true):
        return None  # undefined when a class has no example
    if task.kind == "binary":
        return float(roc_auc_score(y_true, proba[:, 1]))
    # One-vs-rest macro over one-hot labels: scikit-learn's multi_class="ovr"
    # reads two classes as a binary problem and then wants one column.
    return float(roc_auc_score(_one_hot(task, y_true), proba, average="macro"))


def _one_hot(task: Task, y_true: np.ndarray) -> np.ndarray:
    """``(n, classes)`` indicators, two columns for two classes too
    (scikit-learn's `label_binarize` gives one column then)."""
    return np.eye(task.num_classes, dtype=np.int64)[np.asarray(y_true, np.int64)]


def _pr_auc(task: Task, y_true: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if not _all_classes_present(task, y_true):
        return None
    if task.kind == "binary":
        return float(average_precision_score(y_true, proba[:, 1]))
    return float(average_precision_score(_one_hot(task, y_true), proba, average="macro"))


def reliability(
    task: Task, y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """The reliability diagram's bins and the expected calibration error.

    Binary tasks bin the positive class's probability against the share of
    positives (scikit-learn's `calibration_curve`); multi-class tasks bin the
    top class's probability (the confidence) against the share of rows whose
    top class is right. ECE is the mean gap between the two, each bin weighted
    by its share of rows; bins are ``(lo, hi]`` (the first ``[0, hi]``), as
    in Guo et al. (2017), "On calibration of modern neural networks".

    For a binary task this differs on purpose from that paper's top-label
    ECE, which bins ``max(p, 1 - p)``: the positive-class probability is
    what a binary model outputs and what its reliability diagram shows
    (scikit-learn's `calibration_curve`), and binning it keeps an
    over-confident negative prediction (p = 0.05 for a positive row) apart
    from an over-confident positive one. Multi-class tasks use the paper's
    top-label ECE.

    Args:
        task: A classification task.
        y_true: Class indices.
        proba: `(n, classes)` probabilities, as `class_probabilities` returns.
        bins: Equal-width bins over [0, 1]. Defaults to `CALIBRATION_BINS`.

    Returns:
        `confidence` (mean predicted probability per non-empty bin),
        `observed` (observed frequency), `counts`, `bin_edges`, `ece`, and
        `kind` (`"positive class"` or `"top class"`).
    """
    from sklearn.calibration import calibration_curve

    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if task.kind == "binary":
        hits, prob, kind = y_true, proba[:, 1], "positive class"
    else:
        hits = (proba.argmax(axis=1) == y_true).astype(np.int64)
        prob, kind = proba.max(axis=1), "top class"
    prob = np.clip(prob, 0.0, 1.0)
    observed, confidence = calibration_curve(
        hits, prob, n_bins=bins, strategy="uniform", pos_label=1
    )
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], prob), minlength=bins)  # sklearn's binning
    counts = counts[counts > 0]
    ece = float(np.sum(counts / len(prob) * np.abs(observed - confidence)))
    return {
        "confidence": confidence.tolist(),
        "observed": observed.tolist(),
        "counts": counts.tolist(),
        "bin_edges": edges.tolist(),
        "ece": ece,
        "kind": kind,
    }


def curve_data(task: Task, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    """What the report plots: ROC and precision-recall curves, reliability
    bins (classification), or predictions and residuals (regression).

    ROC and PR curves are one-vs-rest, one per class that has both positive
    and negative rows (binary tasks: the positive class only).

    Args:
        task: The task.
        y_true: True labels (class indices, or targets).
        outputs: The model's outputs for the same rows.

    Returns:
        Classification: `roc` and `pr` (class name to its curve and area) and
        `reliability` (see `reliability`). Regression: `predicted` and
        `residual` (true minus predicted).
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    if task.kind == "regression":
        pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return {"predicted": pred, "residual": y_true.astype(np.float64) - pred}
    y_true = y_true.astype(np.int64)
    proba = normalized(class_probabilities(task, outputs))
    names = class_names(task)
    classes = [1] if task.kind == "binary" else range(task.num_classes)
    roc, pr = {}, {}
    for c in classes:
        positive = y_true == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positive, proba[:, c])
        precision, recall, _ = skm.precision_recall_curve(positive, proba[:, c])
        roc[names[c]] = {"fpr": fpr, "tpr": tpr, "auc": float(skm.auc(fpr, tpr))}
        pr[names[c]] = {
            "precision": precision,
            "recall": recall,
            "ap": float(skm.average_precision_score(positive, proba[:, c])),
        }
    return {"roc": roc, "pr": pr, "reliability": reliability(task, y_true, proba)}


def agreement(task: Task, outputs: np.ndarray, reference: np.ndarray) -> float:
    """The share of rows on which ``outputs`` agree with ``reference``.

    Classification: the predicted class matches. Regression: the output is
    within `REGRESSION_AGREEMENT_RTOL` of the reference outputs' range.
    """
    if len(reference) == 0:
        return 1.0
    if task.is_classification:
        same = predicted_classes(task, outputs) == predicted_classes(task, reference)
        return float(np.mean(same))
    span = float(np.ptp(reference)) or 1.0
    diff = np.abs(outputs.reshape(reference.shape) - reference).reshape(len(reference), -1)
    return float(np.mean(diff.max(axis=1) <= REGRESSION_AGREEMENT_RTOL * span))
