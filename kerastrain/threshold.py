"""The decision threshold of a binary classifier (``evaluate={"threshold": ...}``).

A binary model outputs the positive class's probability; 0.5 is the usual
cut, and a poor one when the classes are unbalanced. `choose_threshold`
picks the cut that maximizes F1 (the macro F1 that `compute_metrics`
reports) or balanced accuracy on labelled rows (the validation split:
never the test split, whose score would then be optimistic), and
`metrics_at_threshold` scores predictions cut there. Pure NumPy and
scikit-learn: nothing here imports a stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerastrain.errors import config_error
from kerastrain.metrics import label_metrics
from kerastrain.task import Task

__all__ = ["choose_threshold", "metrics_at_threshold", "check_threshold", "positive_scores"]


def positive_scores(outputs: np.ndarray) -> np.ndarray:
    """The positive class's probability per row (one sigmoid unit, or the
    second column of a 2-unit softmax)."""
    outputs = np.asarray(outputs, np.float64)
    table = outputs.reshape(len(outputs), -1)
    return table[:, 1] if table.shape[1] == 2 else table[:, 0]


def check_threshold(threshold: Any, task: Task, validation_rows: int) -> None:
    """Refuses `evaluate.threshold` for a task that is not binary, and a rule
    without a validation split to choose on; before training.

    Raises:
        ConfigError: Naming the option.
    """
    if threshold is None:
        return
    if task.kind != "binary":
        raise config_error(
            "evaluate.threshold",
            threshold,
            f"None for a {task.kind} task (a decision threshold applies to binary tasks)",
        )
    if isinstance(threshold, str) and validation_rows == 0:
        raise config_error(
            "evaluate.threshold",
            threshold,
            "a number when there is no validation split to choose it on "
            "(data_options.validation_split=0)",
        )


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """The threshold that maximizes ``rule`` on these rows.

    Every distinct score is tried as a cut at once (cumulative counts over
    the rows sorted by score); the threshold returned lies halfway between
    the lowest score predicted positive and the highest predicted negative.

    Args:
        y_true: 0/1 labels.
        scores: The positive class's probability.
        rule: `"f1"` (macro F1 over both classes) or `"balanced_accuracy"`.

    Returns:
        The threshold: a row is positive when its score is at least it.

    Example:
        >>> choose_threshold(np.array([0, 0, 1, 1]), np.array([.1, .2, .3, .4]), "f1")
        0.25
    """
    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    positives, n = int(y.sum()), len(y)
    negatives = n - positives
    last = np.r_[np.flatnonzero(np.diff(s) != 0), n - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1) - tp
    fn, tn = positives - tp, negatives - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "f1":
            f1_pos = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
            f1_neg = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
            value = (f1_pos + f1_neg) / 2
        else:
            value = (np.nan_to_num(tp / positives) + np.nan_to_num(tn / negatives)) / 2
    best = int(np.argmax(value))
    lowest_positive = s[last[best]]
    below = s[last[best] + 1] if last[best] + 1 < n else max(lowest_positive - 1e-6, 0.0)
    return float((lowest_positive + below) / 2)


def metrics_at_threshold(
    task: Task, y_true: np.ndarray, outputs: np.ndarray, threshold: float
) -> dict[str, Any]:
    """The threshold-dependent metrics of `compute_metrics` (same
    conventions: macro precision, recall and F1) for predictions cut at
    ``threshold``, with the threshold itself.

    Args:
        task: A binary task.
        y_true: Class indices.
        outputs: The model's outputs.
        threshold: A row is positive when its score is at least this.

    Returns:
        `threshold` and `label_metrics`' figures (accuracy, balanced
        accuracy, macro and weighted precision, recall, F1, per class, the
        confusion matrix, examples).
    """
    y = np.asarray(y_true).astype(np.int64)
    if not len(y):
        return {}
    pred = (positive_scores(outputs) >= threshold).astype(np.int64)
    return {"threshold": float(threshold), **label_metrics(task, y, pred)}
