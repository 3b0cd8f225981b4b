"""Resume, tried as a careless user would: kill a run and rerun it without a
seed, kill it after training, damage its backup, change the model before
rerunning, train under a strategy the stock backup does not support.

A resumed run either continues exactly the run its backup belongs to (same
seed, same splits, same model), or refuses with a message naming the backup
folder and ``train.backup.resume=false``; it never resumes silently wrong.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.callbacks import load_records
from kerastrain.config import TrainConfig
from kerastrain.task import Task
from kerastrain.training import compile_model, train_model
from kerastrain.training.finished import finished_record, record_finished, restore_finished

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6
TRAIN = {
    "epochs": EPOCHS,
    "batch_size": 16,
    "early_stopping": None,
    "verbose": 0,
    "backup": {"interval": 0},
}
# argv: run folder, train options (JSON), export formats (JSON); no seed: the
# run draws one, as a user's first run does.
CHILD = """
import json, logging, sys
from sklearn.datasets import load_breast_cancer
import kerastrain
logging.basicConfig(level=logging.INFO, format="%(message)s")
x, y = load_breast_cancer(return_X_y=True)
kerastrain.fit_pipeline((x.astype("float32"), y), model="mlp", output_dir=sys.argv[1],
                        train=json.loads(sys.argv[2]), export={"formats": json.loads(sys.argv[3])},
                        report={"explain": "none"})
"""
UNUSABLE = r"training backup in '.*' cannot be resumed.*train\.backup\.resume=false"


def _cancer():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return x.astype("float32"), y


def _kill_child_when(tmp_path: Path, run: Path, formats: list, ready: Callable[[], bool]) -> None:
    """Starts `CHILD` into `run` and SIGKILLs it as soon as `ready()` holds."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    log_path = tmp_path / "child.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(run), json.dumps(TRAIN), json.dumps(formats)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        try:
            while not ready():
                assert child.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the child never got there"
                time.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # killed, unfinished


def _recorded_seed(run: Path) -> int:
    return yaml.safe_load((run / "config.yaml").read_text())["seed"]


# ----------------------------------------------------------------- kills (real processes)


@pytest.mark.slow
@pytest.mark.subprocess
def test_unseeded_rerun_after_a_kill_resumes_with_the_recorded_seed(tmp_path):
    run = tmp_path / "run"
    records = run / "backup" / "history.json"
    _kill_child_when(tmp_path, run, [], lambda: len(load_records(records)) >= 2)
    seed = _recorded_seed(run)
    recorded = load_records(records)

    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", output_dir=str(run), train=TRAIN,
        export={"formats": []}, report={"explain": "none"},
    )  # fmt: skip
    assert result.config.seed == seed  # not a fresh draw: the splits the backup trained on
    assert _recorded_seed(run) == seed  # config.yaml still repeats the run
    assert "resumed at epoch" in result.stop_reason
    assert len(result.history["loss"]) == EPOCHS
    assert result.history["loss"][0] == pytest.approx(recorded[0]["loss"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_kill_during_export_resumes_after_training_instead_of_training_again(tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "child.log"
    _kill_child_when(
        tmp_path, run, ["savedmodel"], lambda: log.exists() and b"Stage export" in log.read_bytes()
    )
    assert finished_record(run / "backup") is not None  # training had finished

    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", output_dir=str(run), train=TRAIN,
        export={"formats": ["savedmodel"]}, report={"explain": "none"},
    )  # fmt: skip
    assert "not run again" in result.stop_reason
    assert len(result.history["loss"]) == EPOCHS
    reference = keras.models.clone_model(result.model)
    reference.load_weights(str(run / "checkpoints" / "last.weights.h5"))
    for got, want in zip(result.model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)  # the weights the killed run trained
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert finished_record(run / "backup") is None  # discarded once the run finished
    assert result.artifacts["savedmodel"].is_dir()  # the export the kill cut short, done


# ----------------------------------------------------------------- the seed, without a kill


def _unfinished(run: Path, seed: int, backup: bool) -> None:
    """The folder an interrupted run leaves: its marker, its config, a backup."""
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    if backup:
        (run / "backup" / "chief").mkdir(parents=True)
        (run / "backup" / "chief" / "ckpt-1.index").write_bytes(b"x")


def test_another_seed_for_an_unfinished_run_with_a_backup_is_refused(tmp_path):
    run = tmp_path / "run"
    _unfinished(run, seed=1234, backup=True)
    with pytest.raises(ConfigError, match=r"started with seed=1234.*Pass seed=1234"):
        kerastrain.fit_pipeline(_cancer(), model="mlp", output_dir=str(run), seed=5, train=TRAIN)
    assert not (run / "checkpoints").exists()  # refused before anything was trained


@pytest.mark.slow
def test_an_unfinished_runs_seed_is_kept_and_backup_resume_false_frees_it(tmp_path):
    run = tmp_path / "run"
    _unfinished(run, seed=1234, backup=False)
    train = {**TRAIN, "epochs": 1}
    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", output_dir=str(run), train=train, export={"formats": []},
        report={"explain": "none"},
    )  # fmt: skip
    assert result.config.seed == 1234

    fresh = tmp_path / "fresh"
    _unfinished(fresh, seed=1234, backup=True)
    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", output_dir=str(fresh), seed=5,
        train={**train, "backup": {"resume": False}}, export={"formats": []},
        report={"explain": "none"},
    )  # fmt: skip
    assert result.config.seed == 5 and "resumed" not in result.stop_reason


def test_a_relaunched_cluster_keeps_the_unfinished_runs_seed(tmp_path):
    from kerastrain.launch import _launch_config

    run = tmp_path / "run"
    _unfinished(run, seed=1234, backup=True)
    config = {"data": "iris", "output_dir": str(run)}
    assert _launch_config(config, ps=0).seed == 1234  # every worker resumes with it
    with pytest.raises(ConfigError, match="started with seed=1234"):
        _launch_config({**config, "seed": 7}, ps=0)


# ----------------------------------------------------------------- unusable backups


def _model(width: int = 8, depth: int = 1) -> keras.Model:
    keras.utils.set_random_seed(1)
    layers = [keras.layers.Dense(width, activation="relu") for _ in range(depth)]
    return keras.Sequential(
        [keras.Input((30,)), *layers, keras.layers.Dense(1, activation="sigmoid")]
    )


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("simulated crash")


def _fit(data, backup, train, model=None, callbacks=(), strategy=None):
    with (strategy or tf.distribute.get_strategy()).scope():
        model = model or _model()
        compile_model(model, Task("binary"), train)
    return model, train_model(model, data, None, train, backup_dir=backup, callbacks=callbacks)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, breast_cancer_arrays):
    """A backup left by a fit that crashed after epoch 2 of 3, and its data."""
    x, y = breast_cancer_arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(64)
    train = TrainConfig(
        epochs=3, early_stopping=None, verbose=0, checkpoints=False, backup={"interval": 0}
    )
    backup = tmp_path_factory.mktemp("crashed") / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(data, backup, train, callbacks=[_Crash()])
    keras.backend.clear_session()
    return data, train, backup


def _truncate(pattern: str) -> Callable[[Path], None]:
    def cut(backup: Path) -> None:
        path = next(backup.glob(pattern))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return cut


@pytest.mark.parametrize(
    "damage, model, why",
    [
        (_truncate("chief/ckpt-*.data-*"), _model, "Error"),
        (_truncate("chief/ckpt-*.index"), _model, "Error"),
        (_truncate("chief/checkpoint"), _model, "its index chief/checkpoint is missing"),
        (lambda b: (b / "chief" / "checkpoint").unlink(), _model, "chief/checkpoint is missing"),
        (_truncate("history.json"), _model, "its history history.json is unreadable"),
        (lambda b: None, lambda: _model(width=16), r"different model.*\(30, 8\).*\(30, 16\)"),
        (lambda b: None, lambda: _model(depth=2), "different model.*4 weight tensors.*has 6"),
        (lambda b: (b / "model.json").unlink(), lambda: _model(width=16), "incompatible tensor"),
    ],
    ids=[
        "truncated-data",
        "truncated-index",
        "truncated-state",
        "missing-state",
        "truncated-history",
        "wider-model",
        "deeper-model",
        "wider-model-old-backup",
    ],
)
def test_an_unusable_backup_is_refused_naming_the_folder_and_the_way_out(
    tmp_path, crashed, damage, model, why
):
    data, train, original = crashed
    backup = tmp_path / "backup"
    shutil.copytree(original, backup)
    damage(backup)
    with pytest.raises(ConfigError, match=UNUSABLE) as refused:
        _fit(data, backup, train, model=model())
    assert str(backup) in str(refused.value)
    assert refused.match(why)
    assert any((backup / "chief").glob("ckpt-*"))  # refused: nothing the run had is removed


def test_the_refusals_advice_trains_again_from_the_start(tmp_path, crashed):
    data, train, original = crashed
    backup = tmp_path / "backup"
    shutil.copytree(original, backup)
    wider = train.replace(**{"backup.resume": False})
    model, result = _fit(data, backup, wider, model=_model(width=16))
    assert result.resumed_at is None and result.epochs_run == 3
    assert int(model.optimizer.iterations) == 3 * 9


def test_a_damaged_or_foreign_record_of_a_finished_fit_is_refused(tmp_path, crashed):
    data, train, _ = crashed
    model, result = _fit(data, None, train.replace(epochs=1))
    folder = record_finished(tmp_path / "backup", model, result)
    restored = restore_finished(folder, _model())
    assert restored.history == result.history and "not run again" in restored.stop_reason
    with pytest.raises(ConfigError, match=UNUSABLE):
        restore_finished(folder, _model(width=16))  # another model
    _truncate("weights.data-*")(folder)
    with pytest.raises(ConfigError, match=UNUSABLE):
        restore_finished(folder, _model())


# ----------------------------------------------------------------- strategies (issue 23)


def test_one_device_strategy_backs_up_and_resumes(tmp_path, crashed):
    data, train, _ = crashed
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(data, backup, train, callbacks=[_Crash()], strategy=strategy)
    model, result = _fit(data, backup, train, strategy=strategy)
    assert result.resumed_at == 3 and result.epochs_run == 3
    assert int(model.optimizer.iterations) == 3 * 9  # no step lost, none repeated


@pytest.mark.slow
def test_fit_pipeline_runs_under_a_one_device_strategy_object(tmp_path):
    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", seed=0, output_dir=str(tmp_path / "run"),
        strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), train={**TRAIN, "epochs": 2},
        export={"formats": []}, report={"explain": "none"},
    )  # fmt: skip
    assert result.stop_reason.startswith("completed all 2 epochs")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


def test_an_unsupported_strategy_trains_without_a_backup_and_says_why(tmp_path, crashed, caplog):
    data, train, _ = crashed
    strategy = tf.distribute.experimental.CentralStorageStrategy()
    with caplog.at_level(logging.WARNING, logger="kerastrain"):
        _, result = _fit(data, tmp_path / "backup", train, strategy=strategy)
    assert result.epochs_run == 3
    assert "No training backup under CentralStorageStrategy" in caplog.text
    assert not (tmp_path / "backup" / "chief").exists()


@pytest.mark.slow
def test_a_transfer_run_that_failed_in_export_resumes_with_both_phases_weights(
    tmp_path, digits_arrays, monkeypatch
):
    from kerastrain import pipeline
    from kerastrain.data.preprocess import model_inputs
    from kerastrain.models import Head, build_model

    x, y = digits_arrays
    backbone = build_model(
        "cnn", model_inputs((8, 8, 1), None), Head(10, "softmax"),
        {"filters": 4, "dense": 16, "batch_norm": True},
    )  # fmt: skip
    options = dict(
        seed=0, output_dir=str(tmp_path / "run"), export={"formats": []},
        data_options={"validation_split": 0.0, "test_split": 0.0},
        model_options={"backbone": backbone, "fine_tune_layers": 8, "fine_tune_epochs": 2},
        train={"epochs": 1, "batch_size": 64, "verbose": 0, "early_stopping": None},
        report={"explain": "none"},
    )  # fmt: skip
    trained = []

    def crash(model, *args, **kwargs):
        trained.extend(model.get_weights())
        raise RuntimeError("simulated crash in export")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_export", crash)
        with pytest.raises(RuntimeError, match="simulated crash in export"):
            kerastrain.fit_pipeline((x[:128], y[:128]), "transfer", **options)
    result = kerastrain.fit_pipeline((x[:128], y[:128]), "transfer", **options)
    assert result.stop_reason.endswith("not run again")
    assert result.history["phase"] == [1.0, 2.0, 2.0]
    for got, want in zip(result.model.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(got, want)  # the fine-tuned weights, not phase 1's
