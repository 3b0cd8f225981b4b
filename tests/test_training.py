"""The optimizer factory, losses per task, and the training stage."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.config import TrainConfig
from kerastrain.data import InMemory, make_dataset
from kerastrain.task import Task
from kerastrain.training import compile_model, train_model
from kerastrain.training.fit import monitor_mode
from kerastrain.training.losses import make_loss
from kerastrain.training.optimizers import make_optimizer


@pytest.mark.parametrize(
    "name, options, cls, attrs",
    [
        (
            "sgd",
            {"momentum": 0.9, "nesterov": True},
            keras.optimizers.SGD,
            {"momentum": 0.9, "nesterov": True},
        ),
        ("adam", {"beta_1": 0.8}, keras.optimizers.Adam, {"beta_1": 0.8}),
        ("adamw", {}, keras.optimizers.AdamW, {"weight_decay": 0.0}),
        (
            "rmsprop",
            {"rho": 0.8, "centered": True},
            keras.optimizers.RMSprop,
            {"rho": 0.8, "centered": True},
        ),
        (
            "adagrad",
            {"initial_accumulator_value": 0.2},
            keras.optimizers.Adagrad,
            {"initial_accumulator_value": 0.2},
        ),
        ("nadam", {"epsilon": 1e-6}, keras.optimizers.Nadam, {"epsilon": 1e-6}),
    ],
)
def test_optimizers_by_name_with_their_options(name, options, cls, attrs):
    opt = make_optimizer(TrainConfig(optimizer=name, optimizer_options=options, learning_rate=0.05))
    assert isinstance(opt, cls)
    assert float(opt.learning_rate) == pytest.approx(0.05)
    for key, value in attrs.items():
        assert getattr(opt, key) == pytest.approx(value)


def test_weight_decay_and_clipping_reach_the_optimizer():
    opt = make_optimizer(TrainConfig(weight_decay=0.01, optimizer_options={"clipnorm": 1.0}))
    assert opt.weight_decay == pytest.approx(0.01) and opt.clipnorm == 1.0


def test_losses_follow_the_task_and_label_smoothing():
    assert isinstance(
        make_loss(Task("binary", 2), TrainConfig(label_smoothing=0.1)),
        keras.losses.BinaryCrossentropy,
    )
    assert isinstance(
        make_loss(Task("multiclass", 3), TrainConfig()), keras.losses.SparseCategoricalCrossentropy
    )
    smoothed = make_loss(Task("multiclass", 3), TrainConfig(label_smoothing=0.1))
    assert isinstance(smoothed, keras.losses.CategoricalCrossentropy)
    assert isinstance(make_loss(Task("regression"), TrainConfig()), keras.losses.MeanSquaredError)
    assert make_loss(Task("regression"), TrainConfig(loss="mae")) is keras.losses.get("mae")
    with pytest.raises(ConfigError, match="train.loss"):
        make_loss(Task("regression"), TrainConfig(loss="no_such_loss"))
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_loss(Task("regression"), TrainConfig(label_smoothing=0.1))


def test_monitor_mode_is_inferred_from_the_name():
    assert monitor_mode("val_loss") == "min"
    assert monitor_mode("val_accuracy") == "max"
    assert monitor_mode("val_auc") == "max"
    assert monitor_mode("val_f1") == "max"
    assert monitor_mode("val_accuracy", "min") == "min"


def _tiny_regression(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    return x, y, model


def test_early_stopping_states_its_reason_and_restores_the_best_weights():
    x, y, model = _tiny_regression()
    compile_model(model, Task("regression"), TrainConfig(learning_rate=0.1))
    memory = InMemory(x, y)
    idx = np.arange(len(x))
    best_loss = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best_loss[epoch] = logs["val_loss"]

    # The validation set is the training set with the targets negated: the
    # better the fit, the worse val_loss, so the first epoch is the best.
    val = make_dataset(InMemory(x, -y), idx, 16, training=False)
    result = train_model(
        model,
        make_dataset(memory, idx, 16, training=True, seed=0),
        val,
        TrainConfig(epochs=30, verbose=0, early_stopping=2, learning_rate=0.1),
        callbacks=[Record()],
    )
    assert result.epochs_run < 30
    assert result.stop_reason.startswith("early stopping after epoch")
    assert "weights restored from epoch" in result.stop_reason
    restored = model.evaluate(val, verbose=0)[0]  # [loss, mae, rmse]
    assert restored == pytest.approx(min(best_loss.values()), rel=1e-4)


def test_training_without_early_stopping_runs_every_epoch_and_learns():
    x, y, model = _tiny_regression()
    compile_model(model, Task("regression"), TrainConfig(learning_rate=0.1))
    ds = make_dataset(InMemory(x, y), np.arange(len(x)), 16, training=True, seed=0)
    result = train_model(model, ds, None, TrainConfig(epochs=40, verbose=0, early_stopping=None))
    assert result.epochs_run == 40 and result.stop_reason == "completed all 40 epochs"
    assert result.history["loss"][-1] < 0.01 * result.history["loss"][0]


def test_keras3_callbacks_are_refused():
    import keras as keras3

    x, y, model = _tiny_regression()
    compile_model(model, Task("regression"), TrainConfig())
    ds = make_dataset(InMemory(x, y), np.arange(len(x)), 16, training=True, seed=0)
    with pytest.raises(ConfigError, match="Keras 3"):
        train_model(
            model,
            ds,
            None,
            TrainConfig(epochs=1, verbose=0),
            callbacks=[keras3.callbacks.Callback()],
        )
