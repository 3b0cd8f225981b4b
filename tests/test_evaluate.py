"""Metrics against scikit-learn on fixed predictions, the learning-curve
diagnosis, and `kerastrain.evaluate` on a model and its exported artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

import kerastrain
from kerastrain.evaluation import diagnose
from kerastrain.metrics import compute_metrics, curve_data, reliability
from kerastrain.task import Task

ROOT = Path(__file__).parents[1]


def _fixed_multiclass(n: int = 300, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that are right more often than chance."""
    rng = np.random.default_rng(42)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba.astype(np.float32)


def test_multiclass_metrics_match_scikit_learn():
    y, proba = _fixed_multiclass()
    task = Task("multiclass", 7, tuple(f"c{i}" for i in range(7)))
    m = compute_metrics(task, y, proba)
    p64 = proba.astype(np.float64) / proba.astype(np.float64).sum(axis=1, keepdims=True)
    pred = p64.argmax(axis=1)
    labels = list(range(7))

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        assert m[f"precision{suffix}"] == pytest.approx(
            skm.precision_score(y, pred, average=average, zero_division=0)
        )
        assert m[f"recall{suffix}"] == pytest.approx(skm.recall_score(y, pred, average=average))
        assert m[f"f1{suffix}"] == pytest.approx(skm.f1_score(y, pred, average=average))
    f1_per_class = skm.f1_score(y, pred, average=None)
    support = np.bincount(y, minlength=7)
    for i in range(7):
        assert m["per_class"][f"c{i}"]["f1"] == pytest.approx(f1_per_class[i])
        assert m["per_class"][f"c{i}"]["support"] == support[i]
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p64, multi_class="ovr"))
    onehot = np.eye(7)[y]
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, p64, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p64, labels=labels))
    assert m["top_3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, p64, k=3))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    np.testing.assert_allclose(
        m["confusion_matrix_normalized"], skm.confusion_matrix(y, pred, normalize="true")
    )
    assert m["examples"] == 300


def test_binary_metrics_match_scikit_learn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.35 * (2 * y - 1) * rng.random(200) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    m = compute_metrics(Task("binary", 2), y, p[:, None])
    pred = (p > 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert "top_3_accuracy" not in m  # only with more than 5 classes
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    bins = reliability(Task("binary", 2), y, np.stack([1 - p, p], axis=1))
    np.testing.assert_allclose(bins["observed"], prob_true)
    np.testing.assert_allclose(bins["confidence"], prob_pred)


def test_expected_calibration_error_by_hand():
    y, proba = _fixed_multiclass(200, 4)
    task = Task("multiclass", 4)
    conf, hit = proba.max(axis=1).astype(np.float64), (proba.argmax(axis=1) == y)
    expected = 0.0
    for lo in np.arange(10) / 10:  # bins [0, .1), ..., [.9, 1.0], as scikit-learn draws them
        inside = (conf >= lo) & ((conf < lo + 0.1) if lo < 0.85 else (conf <= 1.0))
        if inside.any():
            expected += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    assert compute_metrics(task, y, proba)["ece"] == pytest.approx(expected, rel=1e-6)
    perfect = np.eye(4)[y]
    assert compute_metrics(task, y, perfect)["ece"] == pytest.approx(0.0)


def test_undefined_metrics_are_none_when_a_class_is_missing():
    y = np.array([0, 0, 1, 1, 0])
    proba = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]]
    )
    m = compute_metrics(Task("multiclass", 3), y, proba)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["per_class"]["2"]["support"] == 0
    assert m["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]


def test_regression_metrics_and_residuals_match_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=120)
    pred = y + rng.normal(0, 0.3, 120)
    m = compute_metrics(Task("regression"), y, pred[:, None])
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    curves = curve_data(Task("regression"), y, pred[:, None])
    np.testing.assert_allclose(curves["residual"], y - pred)


@pytest.mark.parametrize(
    "history, baseline, kind, quoted",
    [
        (
            {
                "loss": [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1],
                "val_loss": [1.0, 0.7, 0.55, 0.6, 0.68, 0.75, 0.8],
            },
            None,
            "overfitting",
            ["0.55 at epoch 3", "0.8 at epoch 7", "4 epochs", "epoch 3"],
        ),
        (
            {
                "loss": [2.31, 2.30, 2.30, 2.30, 2.30, 2.30],
                "val_loss": [2.31, 2.31, 2.30, 2.30, 2.30, 2.30],
            },
            2.30,
            "underfitting",
            ["100%", "2.3"],
        ),
        (
            {"loss": [2.0, 1.4, 1.0, 0.8, 0.6, 0.45], "val_loss": [2.0, 1.5, 1.1, 0.9, 0.7, 0.55]},
            2.30,
            "still_improving",
            ["0.9 to 0.55", "epochs"],
        ),
        (
            {
                "loss": [2.0, 0.5, 0.3, 0.28, 0.28, 0.28],
                "val_loss": [2.0, 0.6, 0.4, 0.38, 0.38, 0.38],
            },
            2.30,
            "good_fit",
            ["0.38"],
        ),
        ({"loss": [1.0, 0.5]}, None, "too_short", ["2 epochs"]),
    ],
)
def test_diagnosis_reads_the_curves(history, baseline, kind, quoted):
    findings = diagnose(history, baseline=baseline)
    assert findings[0].kind == kind
    for text in quoted:
        assert text in findings[0].observation + findings[0].suggestion
    assert findings[0].suggestion


def test_overfitting_numbers():
    history = {
        "loss": [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1],
        "val_loss": [1.0, 0.7, 0.55, 0.6, 0.68, 0.75, 0.8],
    }
    (finding,) = diagnose(history)
    assert finding.numbers["best_epoch"] == 3 and finding.numbers["epochs_rising"] == 4
    assert "early_stopping" in finding.suggestion and "dropout" in finding.suggestion


@pytest.fixture(scope="module")
def binary_model_and_artifacts(tmp_path_factory, breast_cancer_arrays):
    from kerastrain._keras import keras
    from kerastrain.config import ExportConfig
    from kerastrain.export import export_model

    x, y = breast_cancer_arrays
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential(
        [
            keras.Input((30,)),
            norm,
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    out = tmp_path_factory.mktemp("artifacts")
    artifacts = export_model(model, out, ExportConfig(formats=["savedmodel", "tflite"]))
    return model, artifacts, x[::3], y[::3]


def test_evaluate_model_and_artifacts_side_by_side(binary_model_and_artifacts):
    model, artifacts, x, y = binary_model_and_artifacts
    direct = compute_metrics(Task("binary", 2), y, model.predict(x, verbose=0))
    from_model = kerastrain.evaluate(model, (x, y))
    assert from_model["task"] == "binary"
    assert from_model["accuracy"] == pytest.approx(direct["accuracy"])
    assert from_model["log_loss"] == pytest.approx(direct["log_loss"], rel=1e-5)
    for fmt in ("savedmodel", "tflite"):
        from_artifact = kerastrain.evaluate(artifacts[fmt], (x, y))
        assert from_artifact["task"] == "binary"  # read from labels and outputs alone
        assert from_artifact["accuracy"] == pytest.approx(direct["accuracy"])
        assert from_artifact["roc_auc"] == pytest.approx(direct["roc_auc"], abs=1e-4)
    as_regression = kerastrain.evaluate(model, (x, y), task="regression")
    assert set(as_regression) >= {"mae", "rmse", "r2"}


def test_evaluate_refuses_bad_input(binary_model_and_artifacts):
    model, artifacts, x, y = binary_model_and_artifacts
    with pytest.raises(kerastrain.DataError, match=r"outside the model's classes 0..1"):
        kerastrain.evaluate(model, (x, np.where(np.arange(len(y)) == 4, 3, y)))
    with pytest.raises(kerastrain.DataError, match="rows but there are"):
        kerastrain.evaluate(model, (x, y[:-1]))
    with pytest.raises(kerastrain.ConfigError, match="'task' option"):
        kerastrain.evaluate(model, (x, y), task="binaryy")
    with pytest.raises(kerastrain.ConfigError, match="model_or_artifact_path"):
        kerastrain.evaluate(object(), (x, y))
    with pytest.raises(kerastrain.ExportError, match="Unknown artifact"):
        kerastrain.evaluate(artifacts["tflite"].with_suffix(".pt"), (x, y))


def test_package_names_stay_functions_after_their_modules_are_imported():
    import kerastrain.ensembling  # noqa: F401
    import kerastrain.evaluation  # noqa: F401
    import kerastrain.explanation  # noqa: F401

    assert kerastrain.evaluate is kerastrain.evaluation.evaluate
    assert kerastrain.ensemble is kerastrain.ensembling.ensemble
    assert kerastrain.explain is kerastrain.explanation.explain


#: Reads the public functions before and after importing their modules, in
#: the order given on the command line, in a fresh interpreter.
NAMES_SCRIPT = """
import importlib, sys
import kerastrain
modules = {"evaluate": "evaluation", "ensemble": "ensembling", "explain": "explanation"}
for step in sys.argv[1:]:
    if step == "names":
        seen = [getattr(kerastrain, name) for name in modules]
    else:
        importlib.import_module("kerastrain." + step)
for name, module in modules.items():
    function = getattr(kerastrain, name)
    assert callable(function) and function.__name__ == name, (name, function)
    assert function is getattr(importlib.import_module("kerastrain." + module), name)
print("ok")
"""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "order",
    [
        ["names", "evaluation", "ensembling", "explanation", "pipeline"],
        ["pipeline", "explanation", "ensembling", "evaluation", "names"],
    ],
    ids=["names first", "modules first"],
)
def test_package_names_are_functions_whatever_is_imported_first(order):
    done = subprocess.run(
        [sys.executable, "-c", NAMES_SCRIPT, *order],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
