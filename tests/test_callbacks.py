"""Callbacks: hooks called directly on a stub or small model, plus one short fit each."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.callbacks import (
    BlowupGuard,
    Checkpoint,
    EarlyStopping,
    HistoryRecorder,
    LearningRateLogger,
    Scaled,
    SwapEMAWeights,
    ThroughputLogger,
    TrainingDivergedError,
    load_records,
    lr_range_test,
    merge_history,
    monitor_mode,
    plot_lr_range,
    suggest_learning_rate,
)
from kerastrain.config import TrainConfig
from kerastrain.task import Task
from kerastrain.training import compile_model, train_model


class StubModel:
    """What EarlyStopping touches: a stop flag and weights."""

    def __init__(self):
        self.stop_training = False
        self.value = None

    def get_weights(self):
        return [self.value]

    def set_weights(self, weights):
        self.value = weights[0]


def run_epochs(callback, values, monitor="val_loss"):
    model = StubModel()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        model.value = f"weights of epoch {epoch + 1}"
        callback.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            break
    callback.on_train_end()
    return model


def test_early_stopping_stops_restores_and_says_why():
    stop = EarlyStopping(patience=2)
    model = run_epochs(stop, [1.0, 0.8, 0.85, 0.9, 0.7])
    assert stop.stopped_epoch == 3 and model.stop_training
    assert (
        stop.stop_reason
        == "val_loss did not improve by more than 0 for 2 epochs (best 0.8 at epoch 2)"
    )
    assert model.value == "weights of epoch 2" and stop.restored
    assert stop.summary(10) == (
        "early stopping after epoch 4: val_loss did not improve by more "
        "than 0 for 2 epochs (best 0.8 at epoch 2); weights restored from "
        "epoch 2"
    )


def test_early_stopping_infers_max_for_accuracy_and_honours_min_delta():
    assert monitor_mode("val_auc") == "max" and monitor_mode("val_mae") == "min"
    stop = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    model = run_epochs(stop, [0.5, 0.6, 0.63, 0.9], monitor="val_accuracy")
    assert stop.mode == "max" and stop.stopped_epoch == 2  # +0.03 is not an improvement
    assert stop.best == 0.6 and model.value == "weights of epoch 2"


def test_early_stopping_keeps_last_weights_when_last_is_best_and_stops_on_nan():
    stop = EarlyStopping(patience=3)
    model = run_epochs(stop, [1.0, 0.9, 0.8])
    assert stop.stopped_epoch is None and not stop.restored and model.value == "weights of epoch 3"
    assert stop.summary(3) == "completed all 3 epochs"
    stop = EarlyStopping(patience=3)
    run_epochs(stop, [1.0, math.nan, 0.5])
    assert stop.stopped_epoch == 1 and stop.stop_reason == "val_loss became nan at epoch 2"


def _dense(seed=0, units=1, inputs=4, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(units, activation=activation)]
    )


def test_checkpoint_keeps_best_and_last(tmp_path):
    model = _dense()
    ckpt = Checkpoint(tmp_path / "ckpt", monitor="val_auc")
    ckpt.set_model(model)
    ckpt.on_train_begin()
    weights = {}
    for epoch, auc in enumerate([0.7, 0.9, 0.8]):
        model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
        weights[epoch] = model.get_weights()
        ckpt.on_epoch_end(epoch, {"val_auc": auc})
    assert not ckpt.best_path.exists()  # kept in memory: at most one write a minute
    ckpt.on_train_end()
    assert ckpt.mode == "max" and ckpt.best_epoch == 1
    best, last = _dense(seed=5), _dense(seed=6)
    best.load_weights(str(ckpt.best_path))
    last.load_weights(str(ckpt.last_path))
    for got, want in zip(best.get_weights(), weights[1]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(last.get_weights(), weights[2]):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "best.weights.h5",
        "last.weights.h5",
    ]
    eager = Checkpoint(tmp_path / "eager", save_every_seconds=0)
    eager.set_model(model)
    eager.on_train_begin()
    eager.on_epoch_end(0, {"val_loss": 0.5})
    assert eager.best_path.exists()  # written at once
    lazy = Checkpoint(tmp_path / "lazy")
    lazy.set_model(model)
    lazy.on_train_begin()
    lazy.on_epoch_end(0, {"val_loss": 0.5})
    lazy.on_train_end()  # the best is the last: written once, then copied
    assert lazy.best_path.read_bytes() == lazy.last_path.read_bytes()


def _compiled(lr=0.1, **train):
    model = _dense()
    options = {"optimizer": "sgd", "learning_rate": lr, **train}
    compile_model(model, Task("regression"), TrainConfig(**options), steps_per_epoch=4)
    return model


def test_blowup_guard_hooks_restore_lower_and_give_up():
    model = _compiled(lr=0.1)
    guard = BlowupGuard(retries=1, lr_factor=0.5)
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    good = model.get_weights()
    model.set_weights([w + 100 for w in good])  # what a diverging step does
    model.optimizer.iterations.assign(3)
    guard.on_train_batch_end(2, {"loss": tf.constant(np.inf)})
    for got, want in zip(model.get_weights(), good):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == 0
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.05)
    assert guard.recoveries == [
        {
            "epoch": 1,
            "batch": 3,
            "loss": math.inf,
            "lr_before": pytest.approx(0.1),
            "lr_after": pytest.approx(0.05),
        }
    ]
    guard.on_train_batch_end(3, {"loss": 0.5})  # finite: nothing happens
    with pytest.raises(
        TrainingDivergedError,
        match=r"became nan at epoch 1, batch 5, after 1 "
        r"recoveries.*Lower train.learning_rate",
    ):
        guard.on_train_batch_end(4, {"loss": math.nan})


def test_blowup_guard_lowers_a_schedule_through_its_scale():
    model = _compiled(lr=0.1, schedule="cosine", epochs=5)  # the guard is on: Scaled(cosine)
    scaled = model.optimizer._learning_rate
    assert isinstance(scaled, Scaled)
    guard = BlowupGuard(retries=2, lr_factor=0.1)
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": math.nan})
    assert float(scaled.scale.numpy()) == pytest.approx(0.1)
    bare = _dense()
    bare.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 10)), loss="mse"
    )
    guard = BlowupGuard()
    guard.set_model(bare)
    with pytest.raises(ConfigError, match="Wrap it in kerastrain.callbacks.Scaled"):
        guard.on_train_begin()


@pytest.fixture(scope="module")
def exploding():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, (256, 4)).astype(np.float32)  # large inputs: SGD diverges for lr > 0.01
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_blowup_guard_recovers_a_diverging_fit(exploding):
    train = TrainConfig(
        optimizer="sgd",
        learning_rate=100.0,
        epochs=3,
        early_stopping=None,
        blowup_guard={"retries": 3, "lr_factor": 1e-5},
        verbose=0,
        execution={"steps_per_execution": 4},
    )  # the guard sees every 4th step's loss
    model = _dense()
    compile_model(model, Task("regression"), train)
    result = train_model(model, exploding, None, train)
    lowered = [r["lr_after"] for r in result.recoveries]
    assert lowered == [pytest.approx(1e-3)]  # 100 diverges, 1e-3 does not
    assert all(math.isfinite(v) for v in result.history["loss"])
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert "recovered from" in result.stop_reason
    assert model.optimizer.learning_rate.numpy() == pytest.approx(lowered[-1])


def test_blowup_guard_fails_clearly_when_retries_run_out(exploding):
    train = TrainConfig(
        optimizer="sgd",
        learning_rate=1e4,
        epochs=2,
        early_stopping=None,
        blowup_guard={"retries": 1, "lr_factor": 0.5},
        verbose=0,
    )
    model = _dense()
    compile_model(model, Task("regression"), train)
    with pytest.raises(TrainingDivergedError, match="after 1 recoveries.*from 1e\\+04 to 5e\\+03"):
        train_model(model, exploding, None, train)


def test_default_callbacks_allow_several_steps_per_execution(tmp_path):
    from kerastrain.training import default_callbacks
    from kerastrain.training.execution import pick_steps_per_execution

    own = default_callbacks(
        TrainConfig(ema=True, tensorboard=True),
        has_validation=True,
        run_dir=tmp_path,
        backup_dir=tmp_path / "backup",
    )
    assert pick_steps_per_execution(1e-4, 100, own).value > 1


def test_lr_and_throughput_loggers_hooks():
    class Holder:
        optimizer = keras.optimizers.SGD(0.3)

    lr_logger = LearningRateLogger()
    lr_logger.set_model(Holder())
    logs = {}
    lr_logger.on_epoch_end(0, logs)
    assert logs["learning_rate"] == pytest.approx(0.3)
    speed = ThroughputLogger(examples_per_epoch=1000)
    speed.on_epoch_begin(0)
    time.sleep(0.05)
    speed.on_test_begin()  # validation time is not training time
    time.sleep(0.05)
    logs = {}
    speed.on_epoch_end(0, logs)
    assert logs["epoch_time"] >= 0.1
    assert 1000 / logs["epoch_time"] < logs["examples_per_second"] <= 1000 / 0.05


def test_swap_ema_weights_hooks():
    model = _dense()
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    model.train_on_batch(np.ones((4, 4), np.float32), np.full((4, 1), 5.0, np.float32))
    model.train_on_batch(np.ones((4, 4), np.float32), np.full((4, 1), 5.0, np.float32))
    raw = model.get_weights()
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    assert any(np.abs(r - a).max() > 1e-3 for r, a in zip(raw, averages))
    swap = SwapEMAWeights()
    swap.set_model(model)
    swap.on_train_begin()
    swap.on_test_begin()
    for got, want in zip(model.get_weights(), averages):
        np.testing.assert_allclose(got, want)
    swap.on_test_end()
    for got, want in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(got, want)
    swap.on_epoch_end(0)
    np.testing.assert_allclose(model.get_weights()[0], averages[0])
    swap.on_epoch_begin(1)
    np.testing.assert_array_equal(model.get_weights()[0], raw[0])
    plain = _dense()
    plain.compile(optimizer="sgd", loss="mse")
    swap.set_model(plain)
    with pytest.raises(ConfigError, match="use_ema=True"):
        swap.on_train_begin()


def test_history_recorder_and_merge(tmp_path):
    path = tmp_path / "backup" / "history.json"
    recorder = HistoryRecorder(path)
    recorder.on_train_begin()
    for epoch in range(3):
        recorder.on_epoch_end(epoch, {"loss": np.float32(1.0 / (epoch + 1)), "lr": 0.1})
    assert [r["epoch"] for r in load_records(path)] == [0, 1, 2]
    # A resumed fit ran epochs 2 and 3 (epoch 2 again: the backup was older).
    merged = merge_history(load_records(path), [2, 3], {"loss": [0.3, 0.25], "val_loss": [1, 2]})
    assert merged["loss"] == pytest.approx([1.0, 0.5, 0.3, 0.25])
    assert merged["lr"][:2] == [0.1, 0.1] and math.isnan(merged["lr"][2])
    assert math.isnan(merged["val_loss"][0]) and merged["val_loss"][2:] == [1.0, 2.0]
    recorder.on_train_end()
    assert not path.exists()


def test_suggest_learning_rate_rules():
    rates = np.geomspace(1e-5, 1, 51)  # log10 steps of 0.1
    log = np.log10(rates)
    losses = 2 - np.tanh(2 * (log + 3)) + np.where(log > -1, 10 * (log + 1) ** 2, 0)
    assert suggest_learning_rate(rates, losses, "steepest", beta=0) == pytest.approx(1e-3)
    assert suggest_learning_rate(rates, losses, "min_loss", beta=0) == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match="at least 5"):
        suggest_learning_rate(rates[:4], losses[:4])


def test_lr_range_test_restores_the_model_and_plots(tmp_path, breast_cancer_arrays):
    x, y = breast_cancer_arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    before = model.get_weights()
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(32)
    result = lr_range_test(model, ds, start_learning_rate=1e-5, end_learning_rate=100.0, steps=60)
    assert result.stopped_early and len(result.losses) < 60  # Adam at rate 100 diverges
    assert 1e-5 < result.suggestion < result.learning_rates[-1]
    assert np.all(np.diff(result.learning_rates) > 0)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == 0
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    png = plot_lr_range(result, tmp_path / "lr.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_fit_with_early_stopping_checkpoints_and_tensorboard(tmp_path, breast_cancer_arrays):
    x, y = breast_cancer_arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x[:400], y[:400].astype(np.float32))).batch(64)
    val = tf.data.Dataset.from_tensor_slices((x[400:], y[400:].astype(np.float32))).batch(200)
    train = TrainConfig(
        learning_rate=1e-9,
        epochs=6,
        verbose=0,
        tensorboard=True,
        early_stopping={"patience": 1, "min_delta": 1e-3},
        schedule="step",
    )
    model = _dense(inputs=30, activation="sigmoid")
    compile_model(model, Task("binary"), train, steps_per_epoch=7)
    result = train_model(model, ds, val, train, run_dir=tmp_path, examples_per_epoch=400)
    # Nothing improves at a rate of 1e-9: stopped after epoch 2, with the reason.
    assert result.stop_reason.startswith(
        "early stopping after epoch 2: val_loss did not improve "
        "by more than 0.001 for 1 epochs (best "
    )
    assert result.epochs_run == 2 and set(result.history) >= {
        "loss",
        "val_loss",
        "val_auc",
        "learning_rate",
        "epoch_time",
        "examples_per_second",
    }
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()
    assert (tmp_path / "checkpoints" / "last.weights.h5").exists()
    assert any((tmp_path / "tensorboard" / "train").iterdir())
    # Asked twice (train.tensorboard, and the TensorBoard callback tracking.tensorboard
    # passes): one writer, one events file.
    run = tmp_path / "twice"
    model = _dense(inputs=30, activation="sigmoid")
    compile_model(model, Task("binary"), train, steps_per_epoch=7)
    theirs = keras.callbacks.TensorBoard(str(run / "tensorboard"))
    train_model(model, ds.take(2), None, train.replace(epochs=1), run_dir=run, callbacks=[theirs])
    assert len(list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_fit_pipeline_learning_rate_find(tmp_path, breast_cancer_arrays):
    x, y = breast_cancer_arrays
    result = kerastrain.fit_pipeline(
        (x, y),
        model="mlp",
        seed=2,
        output_dir=str(tmp_path / "run"),
        export={"formats": []},
        train={
            "learning_rate": "find",
            "epochs": 2,
            "verbose": 0,
            "early_stopping": None,
            "lr_finder": {"steps": 30, "start_learning_rate": 1e-5},
        },
    )
    record = json.loads((result.run_dir / "lr_finder.json").read_text())
    assert (result.run_dir / "lr_finder.png").exists() and len(record["losses"]) <= 30
    assert result.config.train.learning_rate == pytest.approx(record["suggestion"])
    assert result.history["learning_rate"] == pytest.approx([record["suggestion"]] * 2)
