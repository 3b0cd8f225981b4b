"""fit_pipeline end to end on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from kerastrain import ConfigError, DataError, fit_pipeline
from kerastrain.config import load_config


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_run")
    return fit_pipeline("digits", train={"epochs": 12, "verbose": 0}, output_dir=str(out), seed=0)


@pytest.mark.slow
def test_digits_reaches_90_percent_and_tflite_agrees(digits_run):
    metrics = digits_run.metrics
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["tflite"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1 / 270)
    assert metrics["tflite"]["agreement"] >= 0.99
    assert metrics["savedmodel"]["max_abs_diff"] < 1e-5
    assert set(digits_run.artifacts) == {"savedmodel", "keras", "tflite"}
    assert np.array(metrics["test"]["confusion_matrix"]).sum() == metrics["test"]["examples"]


def test_the_run_folder_holds_everything_needed_to_repeat_the_run(digits_run):
    run = digits_run.run_dir
    for name in (
        "config.yaml",
        "metrics.json",
        "history.json",
        "report.html",
        "MODEL_CARD.md",
        "learning_curves.png",
        "model.tflite",
        "model.keras",
        "savedmodel",
        "run.json",
    ):
        assert (run / name).exists(), name
    saved = load_config(run / "config.yaml")
    assert saved.seed == 0 and saved.train.epochs == 12 and saved.data == "digits"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (
        json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
        == digits_run.metrics["test"]["accuracy"]
    )
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == len(digits_run.history["loss"]) <= 12
    report = digits_run.report_path.read_text()
    assert (
        "learning_curves.png" in report and "tflite" in report and digits_run.stop_reason in report
    )
    # Each "auto" speed choice is in the report with its reason.
    for option in ("mixed_precision", "steps_per_execution", "jit_compile"):
        decision = digits_run.performance[option]
        assert option in report and decision.reason in report, option
    assert not (run / "backup").exists() or not any((run / "backup").iterdir())


def test_a_finished_run_is_not_overwritten(digits_run):
    with pytest.raises(ConfigError, match="holds a finished run.*overwrite=True"):
        fit_pipeline("digits", output_dir=str(digits_run.run_dir))


def test_bad_data_fails_before_training_and_marks_the_run_failed(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    x[4, 2] = np.nan
    with pytest.raises(DataError, match=r"Rows 4 \(1 row\) have NaN"):
        fit_pipeline((x, np.arange(30) % 2), output_dir=str(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    assert not (tmp_path / "run" / "model.tflite").exists()


@pytest.mark.slow
def test_binary_dataframe_with_a_yaml_config(tmp_path, breast_cancer_arrays):
    import pandas as pd

    x, y = breast_cancer_arrays
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(label=y)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "mlp",
                "model_options": {"width": 16},
                "data_options": {"target": "label"},
                "train": {
                    "epochs": 8,
                    "optimizer": "sgd",
                    "learning_rate": 0.05,
                    "optimizer_options": {"momentum": 0.9, "nesterov": True},
                    "verbose": 0,
                },
                "export": {"formats": ["savedmodel", "tflite"]},
                "seed": 1,
            }
        )
    )
    result = fit_pipeline(frame, config=config, output_dir=str(tmp_path / "run"))
    assert result.metrics["test"]["accuracy"] > 0.9
    assert result.metrics["test"]["roc_auc"] > 0.95
    assert result.metrics["tflite"]["agreement"] == 1.0
    assert result.config.train.optimizer == "sgd"


@pytest.mark.slow
def test_regression_trains_on_scaled_targets_and_answers_in_original_units(tmp_path):
    from sklearn.datasets import load_diabetes

    y = load_diabetes().target  # 25..346: far from unit scale
    result = fit_pipeline(
        "diabetes",
        "mlp",
        train={"epochs": 40, "verbose": 0, "early_stopping": 10},
        export={"formats": ["tflite"]},
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    assert set(result.metrics["test"]) >= {"mae", "rmse", "r2"}
    assert result.metrics["test"]["r2"] > 0.1
    assert result.metrics["tflite"]["mae"] == pytest.approx(result.metrics["test"]["mae"], rel=1e-4)
    predictions = result.model.predict(load_diabetes().data.astype("float32"), verbose=0)
    assert abs(predictions.mean() - y.mean()) < 0.2 * y.std()  # original units, not standardized
