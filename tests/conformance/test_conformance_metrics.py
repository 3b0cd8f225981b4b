"""Every metric `compute_metrics` reports, against scikit-learn called the way
its documentation shows and against textbook formulas computed with NumPy.

The references: scikit-learn's `sklearn.metrics` functions with their own
defaults (or the averaging kerastrain documents), NumPy for accuracy, the
confusion matrix, balanced accuracy, log loss, MAE, RMSE and R², and the
expected calibration error of Guo et al. (2017, "On calibration of modern
neural networks", section 2: M equal-width bins ((m-1)/M, m/M], each bin's
|accuracy - confidence| weighted by its share of rows).

Cases: well-mixed random predictions, float32 softmax rows (which sum to 1
only within ~1e-7), probabilities exactly at 0.5 and on bin edges, a class
never predicted, a class missing from the labels, a single row, no rows,
constant regression targets.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from kerastrain.config import TrainConfig
from kerastrain.metrics import CALIBRATION_BINS, TOP_K, compute_metrics
from kerastrain.task import Task
from kerastrain.training.losses import make_metrics

#: Same float64 inputs on both sides: only the order of float64 sums may differ.
RTOL = 1e-9
#: float32 softmax rows are renormalized to sum to exactly 1 before scoring;
#: against the raw float32 rows the log loss moves by at most a few float32 ulps.
RTOL_FLOAT32_ROWS = 1e-6
#: tf_keras's AUC (logged as `auc`/`val_auc` while training) integrates over
#: 200 fixed thresholds, an approximation of the exact area: 4e-5 off on the
#: 400 spread-out probabilities below; the bound leaves room for its
#: threshold-spacing error (up to ~1/200 where scores crowd together).
KERAS_AUC_ATOL = 5e-3

BINARY = Task("binary", 2)
MULTICLASS = Task("multiclass", 7)  # more than 5 classes: top-3 accuracy is reported
REGRESSION = Task("regression")


def textbook_ece(correct: np.ndarray, confidence: np.ndarray, bins: int = CALIBRATION_BINS):
    """Guo et al.'s ECE: bins ((m-1)/M, m/M] (the first also holds 0)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.digitize(confidence, edges[1:-1], right=True)
    total = 0.0
    for m in range(bins):
        rows = which == m
        if rows.any():
            total += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return total


def textbook_log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean -log p(true class); log(0) kept finite by clipping p at float64's
    epsilon, scikit-learn's convention."""
    eps = np.finfo(np.float64).eps
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps))))


def confusion(y: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (y, pred), 1)
    return counts


@pytest.fixture(scope="module")
def binary_case():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + rng.uniform(0.0, 0.65, 400), 0.0, 1.0)
    p[:6] = [0.5, 0.5, 0.1, 0.2, 0.9, 1.0]  # a tie at 0.5 (class 0, as Keras's > 0.5) and edges
    return y, p


@pytest.fixture(scope="module")
def multiclass_case():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 500)
    logits = rng.normal(size=(500, 7)) + 1.5 * np.eye(7)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # float64, sums to 1
    return y, proba


def test_binary_metrics_equal_scikit_learn(binary_case):
    y, p = binary_case
    got = compute_metrics(BINARY, y, p.reshape(-1, 1))
    pred = (p > 0.5).astype(int)
    proba = np.stack([1 - p, p], axis=1)
    expected = {
        "accuracy": np.mean(pred == y),
        "balanced_accuracy": np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]),
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "log_loss": textbook_log_loss(y, proba),
        "ece": textbook_ece(y, p),  # the positive-class probability: documented below
        "examples": len(y),
    }
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        p_, r_, f_, _ = skm.precision_recall_fscore_support(y, pred, average=average)
        expected.update({f"precision{suffix}": p_, f"recall{suffix}": r_, f"f1{suffix}": f_})
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=RTOL), name
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=RTOL)
    assert got["confusion_matrix"] == confusion(y, pred, 2).tolist()
    np.testing.assert_allclose(
        got["confusion_matrix_normalized"],
        confusion(y, pred, 2) / np.bincount(y)[:, None],
        rtol=RTOL,
    )
    for c in (0, 1):
        per = got["per_class"][str(c)]
        assert per["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label=c))
        assert per["recall"] == pytest.approx(skm.recall_score(y, pred, pos_label=c))
        assert per["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=c))
        assert per["support"] == int(np.sum(y == c))
    # Flat outputs give the same numbers as an (n, 1) column.
    assert compute_metrics(BINARY, y, p) == got


def test_binary_f1_is_the_macro_average_not_scikit_learns_positive_class_default():
    # Documented difference: kerastrain's f1 averages both classes; scikit-learn's
    # default (average="binary") scores the positive class alone, kept in per_class.
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.3])
    got = compute_metrics(BINARY, y, p)
    pred = (p > 0.5).astype(int)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), rel=RTOL)
    assert got["per_class"]["1"]["f1"] == pytest.approx(skm.f1_score(y, pred), rel=RTOL)
    assert got["f1"] < skm.f1_score(y, pred) - 0.1  # the weak negative class shows


def test_binary_ece_bins_the_positive_class_probability_not_the_top_label():
    # Documented difference from Guo et al.'s top-label ECE, which folds p and 1 - p.
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.3, 0.3, 0.7, 0.7, 0.1, 0.1])
    got = compute_metrics(BINARY, y, p)["ece"]
    assert got == pytest.approx(textbook_ece(y, p), rel=RTOL)
    assert got == pytest.approx((0.1 * 2 + 0.7 * 2 + 0.3 * 2) / 6, rel=RTOL)
    top_label = textbook_ece(((p > 0.5) == y).astype(float), np.maximum(p, 1 - p))
    assert top_label == pytest.approx((0.2 * 4 + 0.1 * 2) / 6, rel=RTOL)


def test_multiclass_metrics_equal_scikit_learn(multiclass_case):
    y, proba = multiclass_case
    labels = list(range(7))
    got = compute_metrics(MULTICLASS, y, proba)
    pred = proba.argmax(axis=1)
    counts = confusion(y, pred, 7)
    expected = {
        "accuracy": np.mean(pred == y),
        "balanced_accuracy": np.mean(np.diag(counts) / counts.sum(axis=1)),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr"),
        "pr_auc": skm.average_precision_score(y, proba, average="macro"),
        "log_loss": textbook_log_loss(y, proba),
        "ece": textbook_ece((pred == y).astype(float), proba.max(axis=1)),
        f"top_{TOP_K}_accuracy": np.mean(
            (np.argsort(-proba, axis=1)[:, :TOP_K] == y[:, None]).any(axis=1)
        ),
        "examples": len(y),
    }
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        p_, r_, f_, _ = skm.precision_recall_fscore_support(y, pred, average=average)
        expected.update({f"precision{suffix}": p_, f"recall{suffix}": r_, f"f1{suffix}": f_})
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=RTOL), name
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=labels), rel=RTOL)
    assert got["confusion_matrix"] == counts.tolist()
    np.testing.assert_allclose(
        got["confusion_matrix_normalized"], counts / counts.sum(axis=1, keepdims=True), rtol=RTOL
    )
    p_, r_, f_, s_ = skm.precision_recall_fscore_support(y, pred, average=None)
    for c in labels:
        per = got["per_class"][str(c)]
        assert [per["precision"], per["recall"], per["f1"]] == pytest.approx(
            [p_[c], r_[c], f_[c]], rel=RTOL
        )
        assert per["support"] == s_[c]


def test_float32_softmax_rows_are_scored_as_the_probabilities_they_stand_for(multiclass_case):
    y, proba = multiclass_case
    rows32 = proba.astype(np.float32)
    got = compute_metrics(MULTICLASS, y, rows32)  # renormalized: no warning
    with pytest.warns(UserWarning, match="do not sum to one"):
        raw = skm.log_loss(y, rows32.astype(np.float64), labels=list(range(7)))
    assert got["log_loss"] == pytest.approx(raw, rel=RTOL_FLOAT32_ROWS)
    assert got["accuracy"] == compute_metrics(MULTICLASS, y, proba)["accuracy"]


def test_a_class_never_predicted_scores_zero_precision_as_scikit_learns_zero_division():
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.eye(3)[[0, 1, 1, 1, 1, 0]] * 0.8 + 0.2 / 3  # class 2 never predicted
    got = compute_metrics(Task("multiclass", 3), y, proba)
    pred = proba.argmax(axis=1)
    assert got["per_class"]["2"]["precision"] == 0.0
    assert got["precision"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0), rel=RTOL
    )
    assert "top_3_accuracy" not in got  # 3 classes: top-3 would always be 1


def test_areas_are_none_where_scikit_learn_calls_them_undefined():
    # Documented: None (JSON null) where scikit-learn warns and returns NaN.
    y = np.array([0, 1, 1, 0, 1])
    proba = np.random.default_rng(2).dirichlet(np.ones(3), 5)  # class 2 has no row
    got = compute_metrics(Task("multiclass", 3), y, proba)
    assert got["roc_auc"] is None and got["pr_auc"] is None
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(skm.roc_auc_score(y, proba, multi_class="ovr", labels=[0, 1, 2]))
    one = compute_metrics(BINARY, np.array([1]), np.array([0.7]))
    assert one["roc_auc"] is None and one["accuracy"] == 1.0 and one["examples"] == 1
    assert compute_metrics(BINARY, np.array([]), np.array([])) == {}


def test_regression_metrics_equal_the_formulas_and_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    pred = y + rng.normal(scale=0.3, size=300)
    got = compute_metrics(REGRESSION, y, pred.reshape(-1, 1).astype(np.float64))
    err = y - pred
    assert got["mae"] == pytest.approx(np.mean(np.abs(err)), rel=RTOL)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=RTOL)
    r2 = 1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2)
    assert got["r2"] == pytest.approx(r2, rel=RTOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=RTOL)
    assert got["examples"] == 300
    # Constant targets: R² is undefined; scikit-learn's finite convention (0 unless
    # perfect) is kept.
    flat = np.full(5, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert compute_metrics(REGRESSION, flat, flat + 0.1)["r2"] == skm.r2_score(flat, flat + 0.1)


def test_logged_metrics_are_tf_keras_and_their_auc_an_approximation(binary_case):
    # Documented: the val_auc of the training logs is tf_keras's AUC over 200
    # thresholds; the evaluation's roc_auc is scikit-learn's exact area.
    y, p = binary_case
    logged = {m.name: m for m in make_metrics(BINARY, TrainConfig())}
    for metric in logged.values():
        metric.update_state(y.reshape(-1, 1), p.reshape(-1, 1).astype(np.float32))
    exact = compute_metrics(BINARY, y, p)
    assert float(logged["accuracy"].result()) == pytest.approx(exact["accuracy"], rel=1e-6)
    assert float(logged["auc"].result()) == pytest.approx(exact["roc_auc"], abs=KERAS_AUC_ATOL)
