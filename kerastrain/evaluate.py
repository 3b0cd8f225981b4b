"""Metrics from predictions, computed with scikit-learn.

Everything here works on NumPy arrays of labels and model outputs, so the
Keras model and every exported artifact are scored by the same code.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from kerastrain.data.validate import Task

logger = logging.getLogger(__name__)

__all__ = ["compute_metrics", "predicted_classes", "class_probabilities"]


def class_probabilities(task: Task, outputs: np.ndarray) -> np.ndarray:
    """``(n, classes)`` probabilities from the model's outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task.kind == "binary":
        p = outputs.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return outputs.reshape(len(outputs), -1)


def predicted_classes(task: Task, outputs: np.ndarray) -> np.ndarray:
    """The predicted class of each row (classification tasks)."""
    return class_probabilities(task, outputs).argmax(axis=1)


def compute_metrics(task: Task, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    """Scores predictions for the task.

    Classification: accuracy, macro precision, recall and F1, ROC-AUC
    (one-vs-rest for several classes; `None` when a class is missing from
    `y_true`, since it is then undefined), and the confusion matrix.
    Regression: MAE, RMSE and R².

    Args:
        task: The task.
        y_true: True labels (class indices, or targets).
        outputs: The model's outputs for the same rows.

    Returns:
        A JSON-ready mapping of metric names to values (the confusion matrix
        as nested lists, rows the true classes).

    Example:
        >>> compute_metrics(Task("binary", 2), np.array([0, 1]), np.array([[0.2], [0.9]]))["accuracy"]
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
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, pred))),
            "r2": float(skm.r2_score(y_true, pred)),
            "examples": int(len(y_true)),
        }
    proba = class_probabilities(task, outputs)
    y_pred = proba.argmax(axis=1)
    labels = list(range(task.num_classes))
    result: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, labels=labels, average="macro",
                                               zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, labels=labels, average="macro",
                                         zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "roc_auc": _roc_auc(task, y_true, proba),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "examples": int(len(y_true)),
    }
    return result


def _roc_auc(task: Task, y_true: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < task.num_classes:
        return None  # undefined when a class has no example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.kind == "binary":
            return float(roc_auc_score(y_true, proba[:, 1]))
        rows = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
        return float(roc_auc_score(y_true, rows, multi_class="ovr",
                                   labels=list(range(task.num_classes))))
