"""Resume: a run killed mid-training continues from its last backup."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.callbacks import load_records
from kerastrain.config import TrainConfig
from kerastrain.task import Task
from kerastrain.training import compile_model, train_model

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12
TRAIN = {
    "epochs": EPOCHS,
    "batch_size": 16,
    "early_stopping": None,
    "verbose": 0,
    "backup": {"interval": 0},
}
CHILD = """
import json, sys
from sklearn.datasets import load_breast_cancer
import kerastrain
x, y = load_breast_cancer(return_X_y=True)
kerastrain.fit_pipeline((x.astype("float32"), y), model="mlp", seed=7, output_dir=sys.argv[1],
                        export={"formats": []}, train=json.loads(sys.argv[2]))
"""


class Crash(keras.callbacks.Callback):
    """Raises after an epoch (or a batch of it), as a crash would: the backup
    stays behind."""

    def __init__(self, after_epoch: int, after_batch: int | None = None):
        super().__init__()
        self.after_epoch, self.after_batch = after_epoch, after_batch
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch + 1 == self.after_epoch and batch + 1 == self.after_batch:
            raise RuntimeError("simulated crash")

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after_epoch and self.after_batch is None:
            raise RuntimeError("simulated crash")


def _fit(data, backup, train, callbacks=()):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    compile_model(model, Task("binary"), train)
    return model, train_model(model, data, None, train, backup_dir=backup, callbacks=callbacks)


def _batches(arrays):
    """Breast cancer, standardized, in 9 batches of 64."""
    x, y = arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(64)


@pytest.mark.slow
def test_crashed_fit_resumes_without_losing_epochs(tmp_path, breast_cancer_arrays):
    data = _batches(breast_cancer_arrays)
    train = TrainConfig(
        epochs=5, early_stopping=None, verbose=0, checkpoints=False, backup={"interval": 0}
    )
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(data, backup, train, callbacks=[Crash(after_epoch=3)])
    before = load_records(backup / "history.json")
    assert [r["epoch"] for r in before] == [0, 1, 2]
    shutil.copytree(backup, tmp_path / "second")

    model, result = _fit(data, backup, train)
    assert result.resumed_at == 4 and "resumed at epoch 4 from the backup" in result.stop_reason
    assert result.epochs_run == 5 and len(result.history["learning_rate"]) == 5
    assert result.history["loss"][:3] == pytest.approx([r["loss"] for r in before])
    assert int(model.optimizer.iterations) == 5 * 9  # the optimizer state came back too
    assert not any(backup.iterdir())  # emptied once the fit completed

    _, fresh = _fit(data, tmp_path / "second", train.replace(**{"backup.resume": False}))
    assert fresh.resumed_at is None and fresh.epochs_run == 5


def test_epoch_backups_younger_than_the_interval_are_skipped(tmp_path, breast_cancer_arrays):
    data = _batches(breast_cancer_arrays)
    train = TrainConfig(
        epochs=5, early_stopping=None, verbose=0, checkpoints=False, backup={"interval": 3600}
    )
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(data, backup, train, callbacks=[Crash(after_epoch=3)])
    assert len(load_records(backup / "history.json")) == 3  # the epochs ran, none backed up
    assert not list(backup.rglob("ckpt-*"))
    model, result = _fit(data, backup, train)
    assert result.resumed_at is None and result.epochs_run == 5  # started again
    assert int(model.optimizer.iterations) == 5 * 9


def test_crash_mid_epoch_resumes_from_the_step_backup(tmp_path, breast_cancer_arrays):
    data = _batches(breast_cancer_arrays)
    train = TrainConfig(
        epochs=3, early_stopping=None, verbose=0, checkpoints=False, backup={"frequency": 4}
    )
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):  # backups at steps 4, 8, 12
        _fit(data, backup, train, callbacks=[Crash(after_epoch=2, after_batch=6)])
    model, result = _fit(data, backup, train)
    assert result.resumed_at == 2 and result.epochs_run == 3
    assert int(model.optimizer.iterations) == 3 * 9  # no step lost, none repeated


@pytest.mark.subprocess
def test_killed_pipeline_resumes_from_its_backup(tmp_path):
    run = tmp_path / "run"
    records = run / "backup" / "history.json"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(run), json.dumps(TRAIN)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while len(load_records(records)) < 2:
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the child never finished two epochs"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
    recorded = load_records(records)
    assert 2 <= len(recorded) < EPOCHS
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # it never finished

    result = kerastrain.fit_pipeline(
        _cancer(), model="mlp", seed=7, output_dir=str(run), export={"formats": []}, train=TRAIN
    )
    history = result.history
    assert len(history["loss"]) == EPOCHS  # every epoch, before and after the kill
    resumed = int(result.stop_reason.split("resumed at epoch ")[1].split(" ")[0])
    # The backup is written right after the epoch's record: it holds the last
    # recorded epoch, or the one before when the kill fell between the two.
    assert resumed in (len(recorded), len(recorded) + 1)
    assert history["loss"][: resumed - 1] == pytest.approx(
        [r["loss"] for r in recorded][: resumed - 1]
    )
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    with pytest.raises(
        ConfigError, match=re.escape(str(run)) + ".*holds a finished run.*overwrite=True"
    ):
        kerastrain.fit_pipeline(_cancer(), model="mlp", seed=7, output_dir=str(run), train=TRAIN)


def _cancer():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return x.astype("float32"), y
