"""Divergence, tried as a careless user would: a learning rate of 1e3 or 50.

The blow-up guard must check the weights as well as the loss, log only
metrics the kept model earned, and never let a run that recovered back to
(or below) its untrained start end as "completed".
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

import kerastrain
from kerastrain import TrainingDivergedError
from kerastrain._keras import keras, tf
from kerastrain.callbacks import BlowupGuard, backup_exists
from kerastrain.cli import main
from kerastrain.config import TrainConfig
from kerastrain.task import Task
from kerastrain.training import compile_model, train_model

# Pinned: "auto" picks steps per execution (how often the guard sees the loss),
# XLA and the precision from timings, which vary with the machine's load.
PINNED = {"steps_per_execution": 1, "jit_compile": False, "mixed_precision": "float32"}


def _regression_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])


@pytest.fixture(scope="module")
def exploding():
    """256 rows of large inputs in 16 batches: SGD diverges for lr > 0.01."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, (256, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    return data, data.take(4)


@pytest.fixture(scope="module")
def cancer(breast_cancer_arrays):
    x, y = breast_cancer_arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(64)


def _guarded(lr: float = 0.1, retries: int = 3) -> tuple[keras.Model, BlowupGuard]:
    model = _regression_model()
    compile_model(model, Task("regression"), TrainConfig(optimizer="sgd", learning_rate=lr))
    model.evaluate(np.zeros((2, 4)), np.zeros((2, 1)), verbose=0)  # builds the metrics, as fit does
    guard = BlowupGuard(retries=retries, lr_factor=0.5)
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    return model, guard


def test_a_recovery_at_an_epochs_last_step_logs_nan_not_the_cleared_zeros(exploding):
    train_ds, val_ds = exploding
    train = TrainConfig(
        optimizer="sgd",
        learning_rate=100.0,
        epochs=3,
        early_stopping=None,
        blowup_guard={"retries": 3, "lr_factor": 1e-5},
        verbose=0,
        execution={**PINNED, "steps_per_execution": 16},  # one loss per epoch: its last step
    )
    model = _regression_model()
    compile_model(model, Task("regression"), train)
    result = train_model(model, train_ds, val_ds, train)
    assert [r["batch"] for r in result.recoveries] == [16]
    first = {k: v[0] for k, v in result.history.items()}
    assert math.isnan(first["loss"]) and math.isnan(first["mae"])  # not 0.0: nothing was measured
    assert math.isfinite(first["val_loss"])  # validation ran on the restored weights: real
    assert all(math.isfinite(v) and v > 0 for v in result.history["loss"][1:])
    assert "recovered from 1 non-finite loss" in result.stop_reason


def test_non_finite_weights_under_a_finite_loss_are_restored():
    model, guard = _guarded()
    good = model.get_weights()
    model.set_weights([np.full_like(w, np.nan) for w in good])  # what lr=50 does to the weights
    logs = {"loss": 1e23, "mae": 3e11, "val_loss": 7.0, "val_mae": 2.0}
    guard.on_epoch_end(0, logs)
    for got, want in zip(model.get_weights(), good):
        np.testing.assert_array_equal(got, want)
    assert guard.recoveries[-1]["batch"] is None and guard.recoveries[-1]["loss"] == 1e23
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.05)
    assert all(math.isnan(v) for v in logs.values())  # measured on weights thrown away


def test_non_finite_weights_once_retries_run_out_fail_clearly():
    model, guard = _guarded(retries=0)
    model.set_weights([w + np.inf for w in model.get_weights()])
    with pytest.raises(
        TrainingDivergedError,
        match=r"The weights became NaN or infinite at epoch 1 \(the training loss was 1e\+23\), "
        r"after 0 recoveries.*Lower train.learning_rate",
    ):
        guard.on_epoch_end(0, {"loss": 1e23})


def test_finite_weights_and_loss_are_kept_as_the_good_state():
    model, guard = _guarded()
    trained = [w + 1.0 for w in model.get_weights()]
    model.set_weights(trained)
    guard.on_epoch_end(0, {"loss": 0.5})
    model.set_weights([w * np.nan for w in trained])
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": math.nan})
    for got, want in zip(model.get_weights(), trained):  # back to the epoch's end, not the start
        np.testing.assert_array_equal(got, want)


def test_a_fit_recovered_back_to_its_start_is_not_completed_and_leaves_no_backup(tmp_path, cancer):
    train = TrainConfig(
        optimizer="sgd",
        learning_rate=1000.0,
        epochs=3,
        early_stopping=None,
        checkpoints=False,
        verbose=0,
        backup={"interval": 0},
        execution={**PINNED, "steps_per_execution": 9},
    )

    def fit():
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((30,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        compile_model(model, Task("binary"), train)
        return train_model(model, cancer, None, train, backup_dir=tmp_path / "backup")

    message = r"Training diverged: after \d recoveries.*no better than an untrained one"
    with pytest.raises(TrainingDivergedError, match=message):
        fit()
    assert not backup_exists(tmp_path / "backup")  # a rerun does not resume it as finished
    with pytest.raises(TrainingDivergedError, match=message):
        fit()


@pytest.mark.slow
def test_lr_1e3_on_a_table_fails_instead_of_completing_untrained(tmp_path, breast_cancer_arrays):
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="no better than an untrained one"):
        kerastrain.fit_pipeline(
            breast_cancer_arrays,
            model="mlp",
            seed=0,
            output_dir=str(run),
            train={
                "epochs": 3,
                "optimizer": "sgd",
                "learning_rate": 1e3,
                "verbose": 0,
                "execution": {**PINNED, "steps_per_execution": 64},  # a whole epoch per call
            },
            export={"formats": []},
            report={"explain": "none"},
        )
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "failed" and "TrainingDivergedError" in state["error"]
    assert not (run / "metrics.json").exists()  # nothing reported as if it had trained


@pytest.mark.slow
def test_weights_turned_nan_fail_clearly_instead_of_in_scikit_learn(tmp_path, caplog):
    with pytest.raises(TrainingDivergedError, match="Lower train.learning_rate"):
        kerastrain.fit_pipeline(
            "digits",
            seed=0,
            output_dir=str(tmp_path / "run"),
            train={
                "epochs": 3,
                "optimizer": "sgd",
                "learning_rate": 1e3,
                "verbose": 0,
                "execution": PINNED,
            },
            export={"formats": []},
            report={"explain": "none"},
        )
    assert "The weights became NaN or infinite at epoch 1" in caplog.text  # the loss was finite


@pytest.mark.slow
def test_the_cli_reports_a_diverged_run_in_one_paragraph_and_exits_1(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": "breast_cancer",
                "model": "mlp",
                "seed": 0,
                "output_dir": str(tmp_path / "run"),
                "train": {
                    "epochs": 3,
                    "optimizer": "sgd",
                    "learning_rate": 1e3,
                    "verbose": 0,
                    "execution": {**PINNED, "steps_per_execution": 64},
                },
                "export": {"formats": []},
                "report": {"explain": "none"},
            }
        )
    )
    assert main(["run", str(config)]) == 1
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "kerastrain: TrainingDivergedError:" in err and "Traceback" not in err
