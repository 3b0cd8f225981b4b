"""`kerastrain.cross_validate`: one model per fold through `fit_pipeline`,
per-fold and mean ± std metrics, the fold models, out-of-fold predictions."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import kerastrain

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


@pytest.mark.slow
def test_stratified_cross_validation_on_breast_cancer(breast_cancer_arrays, tmp_path, caplog):
    x, y = breast_cancer_arrays
    caplog.set_level(logging.INFO, logger="kerastrain")
    cv = kerastrain.cross_validate(
        (x, y),
        "mlp",
        folds=3,
        seed=0,
        output_dir=str(tmp_path / "cv"),
        model_options={"width": 32, "depth": 1},
        train={"epochs": 8, "batch_size": 64, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    accuracy = cv.metrics["accuracy"]
    assert len(accuracy["folds"]) == 3 and len(cv.models) == 3 and len(cv.results) == 3
    assert accuracy["mean"] == np.mean(accuracy["folds"])
    assert accuracy["std"] == np.std(accuracy["folds"])
    assert accuracy["mean"] > 0.9
    # Every row is held out exactly once, by a model that never trained on it.
    held = np.concatenate([test for _, test in cv.folds])
    assert sorted(held.tolist()) == list(range(len(y)))
    for (train, test), result in zip(cv.folds, cv.results):
        assert result.metrics["test"]["examples"] == len(test)
        assert not set(train) & set(test)
    assert not np.isnan(cv.predictions).any()
    oof_accuracy = np.mean((cv.predictions[:, 0] > 0.5) == y)
    assert abs(oof_accuracy - accuracy["mean"]) < 0.02
    # The fold models are distinct (an ensemble's members).
    first = [w.numpy() for w in cv.models[0].trainable_weights]
    second = [w.numpy() for w in cv.models[1].trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(first, second))
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["metrics"]["accuracy"]["folds"] == accuracy["folds"]
    assert cv.results[2].run_dir == tmp_path / "cv" / "fold_3"
    assert cv.results[2].report_path.exists()
    assert "accuracy" in cv.summary() and "±" in cv.summary()
    # Each fold's end: n/N, its test accuracy and the time left.
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Fold ")]
    ends = [line for line in ends if line.endswith(" left.")]
    assert [line.split(":")[0] for line in ends] == ["Fold 1/3", "Fold 2/3", "Fold 3/3"], ends
    assert all("test accuracy" in line for line in ends)


@pytest.mark.slow
def test_time_series_cross_validation_on_diabetes(tmp_path):
    cv = kerastrain.cross_validate(
        "diabetes",
        "mlp",
        folds=3,
        seed=0,
        output_dir=str(tmp_path / "cv"),
        data_options={"split": "time", "task": "regression"},
        model_options={"width": 16, "depth": 1},
        train={"epochs": 2, "batch_size": 64, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    for train, test in cv.folds:
        assert train.max() < test.min()
    assert set(cv.metrics) == {"mae", "rmse", "r2"}
    first_test = cv.folds[0][1].min()
    assert np.isnan(cv.predictions[:first_test]).all()  # never held out: no prediction
    assert not np.isnan(cv.predictions[first_test:]).any()
