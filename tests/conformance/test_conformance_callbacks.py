"""Early stopping, the plateau schedule and EMA validation against tf_keras's own
callbacks (`tf_keras.callbacks.EarlyStopping`, `ReduceLROnPlateau`) and the
textbook moving average, on scripted logs.

Both sides are fed the same `on_epoch_end` logs, epoch by epoch, on a stub
model whose weights name their epoch (Keras's own `early_stopping_test.py`
does the same). The callbacks are the ones `default_callbacks` builds from a
`TrainConfig`, so the options' mapping is checked too. Where kerastrain
differs on purpose, the test shows the documented difference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerastrain._keras import keras
from kerastrain.callbacks import EarlyStopping, SwapEMAWeights
from kerastrain.config import TrainConfig
from kerastrain.training import default_callbacks
from kerastrain.training.optimizers import make_optimizer

#: Early stopping and plateau decisions are discrete (which epoch stops, which
#: weights come back, which epochs lower the rate): they must agree exactly.
#: Learning rates after a reduction go through one float32 variable on both sides.
LR_RTOL = 1e-7
#: The swapped-in EMA weights are float32 averages updated once per step, against
#: the textbook average in float64: a few float32 roundings per step, 8 steps.
EMA_RTOL = 1e-5

SEQUENCES = 150  # scripted runs per option set
EPOCHS = 25


class StubModel:
    """What the callbacks touch: a stop flag, weights, and an optimizer."""

    def __init__(self, optimizer=None):
        self.stop_training = False
        self.weights = [np.array(-1)]
        self.optimizer = optimizer

    def get_weights(self):
        return list(self.weights)

    def set_weights(self, weights):
        self.weights = list(weights)


def run_logs(callback, values, monitor="val_loss", optimizer=None):
    """(epoch stopped after or None, epoch whose weights the model ends with, rates)."""
    model = StubModel(optimizer)
    callback.set_model(model)
    callback.on_train_begin()
    stopped, rates = None, []
    for epoch, value in enumerate(values):
        model.weights = [np.array(epoch)]
        callback.on_epoch_end(epoch, {monitor: value})
        if optimizer is not None:
            rates.append(float(keras.backend.get_value(optimizer.learning_rate)))
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return stopped, int(model.weights[0]), rates


def ours(early_stopping: dict, monitor: str = "val_loss") -> EarlyStopping:
    train = TrainConfig(early_stopping={"monitor": monitor, **early_stopping})
    callbacks = default_callbacks(train, has_validation=True)
    return next(cb for cb in callbacks if isinstance(cb, EarlyStopping))


def scripted_runs(seed: int, maximize: bool = False) -> list[list[float]]:
    """Noisy learning curves: a decreasing trend with plateaus and bumps."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(SEQUENCES):
        trend = np.cumsum(-np.abs(rng.normal(0.02, 0.03, EPOCHS)) * rng.integers(0, 2, EPOCHS))
        curve = 1.0 + trend + rng.normal(0.0, rng.choice([0.005, 0.03]), EPOCHS)
        runs.append((-curve if maximize else curve).round(3).tolist())
    return runs


OPTIONS = [
    {"patience": 0},
    {"patience": 1},
    {"patience": 3},
    {"patience": 3, "min_delta": 0.02},
    {"patience": 5, "min_delta": 0.005},
    {"patience": 2, "baseline": 0.9},
    {"patience": 4, "baseline": 0.8, "min_delta": 0.01},
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_early_stopping_stops_and_restores_as_tf_keras(options, maximize):
    monitor = "val_accuracy" if maximize else "val_loss"
    if maximize and "baseline" in options:
        options = {**options, "baseline": -options["baseline"]}
    for values in scripted_runs(len(str(options)), maximize):
        reference = keras.callbacks.EarlyStopping(
            monitor=monitor, restore_best_weights=True, **options
        )
        assert run_logs(ours(options, monitor), values, monitor) == run_logs(
            reference, values, monitor
        ), values


def test_baseline_stops_a_run_that_never_beats_it_but_not_while_it_improves():
    values = [1.0, 0.95, 0.9, 0.9, 0.88, 0.86, 0.87]
    for options in ({"patience": 2, "baseline": 0.5}, {"patience": 2, "baseline": 0.92}):
        reference = keras.callbacks.EarlyStopping(restore_best_weights=True, **options)
        stop = ours(options)
        assert run_logs(stop, values) == run_logs(reference, values)
    stop = ours({"patience": 2, "baseline": 0.5})
    assert run_logs(stop, values)[:2] == (3, 2)  # improving epochs 1-2 only delay the stop
    assert stop.stop_reason == (
        "val_loss did not beat the baseline 0.5 by more than 0 in 4 epochs (best 0.9 at epoch 3)"
    )


def test_nan_stops_at_once_where_tf_keras_waits_out_its_patience():
    # Documented difference: NaN weights do not recover; the best ones come back.
    values = [1.0, 0.9, math.nan, 0.8, 0.7, 0.6]
    assert run_logs(ours({"patience": 3}), values) == (2, 1, [])
    reference = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    assert run_logs(reference, values) == (None, 5, [])  # NaN counted as a plain bad epoch


def test_start_from_epoch_tracks_the_best_during_warm_up_where_tf_keras_ignores_it():
    # The case: the same logs, kerastrain restores epoch 0, tf_keras epoch 2.
    values = [0.5, 0.9, 0.8, 0.85, 0.9, 0.95, 0.7]
    stop = EarlyStopping(patience=2, start_from_epoch=2)
    reference = keras.callbacks.EarlyStopping(
        patience=2, start_from_epoch=2, restore_best_weights=True
    )
    assert run_logs(stop, values) == (3, 0, [])
    assert run_logs(reference, values) == (4, 2, [])
    # When no warm-up epoch is the best, both agree on every scripted run.
    for values in scripted_runs(7):
        values = [v + 1.0 for v in values[:3]] + values[3:]
        reference = keras.callbacks.EarlyStopping(
            patience=2, start_from_epoch=3, restore_best_weights=True
        )
        assert run_logs(EarlyStopping(patience=2, start_from_epoch=3), values) == run_logs(
            reference, values
        )


@pytest.mark.parametrize("monitor", ["val_precision", "val_recall", "val_f1"])
def test_auto_mode_maximizes_precision_recall_and_f1_unlike_tf_keras(monitor):
    values = [0.5, 0.6, 0.7, 0.65, 0.64, 0.8]
    stop = ours({"patience": 2}, monitor)
    assert stop.mode == "max"
    assert run_logs(stop, values, monitor) == run_logs(
        keras.callbacks.EarlyStopping(monitor, patience=2, mode="max", restore_best_weights=True),
        values,
        monitor,
    )
    auto = keras.callbacks.EarlyStopping(monitor, patience=2, restore_best_weights=True)
    assert run_logs(auto, values, monitor) == (2, 0, [])  # minimized: stops as it rises


PLATEAU = {
    "factor": 0.5,
    "patience": 2,
    "cooldown": 1,
    "min_delta": 0.01,
    "min_learning_rate": 0.01,
}


def plateau_rates(callback, values, monitor):
    return run_logs(callback, values, monitor, keras.optimizers.SGD(0.4))[2]


def our_plateau(monitor):
    train = TrainConfig(
        learning_rate=0.4,
        schedule="plateau",
        schedule_options={"monitor": monitor, **PLATEAU},
        early_stopping=None,
    )
    callbacks = default_callbacks(train, has_validation=True)
    return next(cb for cb in callbacks if isinstance(cb, keras.callbacks.ReduceLROnPlateau))


def keras_plateau(monitor, mode="auto"):
    return keras.callbacks.ReduceLROnPlateau(
        monitor,
        factor=PLATEAU["factor"],
        patience=PLATEAU["patience"],
        cooldown=PLATEAU["cooldown"],
        min_delta=PLATEAU["min_delta"],
        min_lr=PLATEAU["min_learning_rate"],
        mode=mode,
    )


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_plateau_lowers_the_rate_as_tf_keras_reduce_lr_on_plateau(monitor):
    for values in scripted_runs(11, maximize=monitor == "val_accuracy")[:40]:
        np.testing.assert_allclose(
            plateau_rates(our_plateau(monitor), values, monitor),
            plateau_rates(keras_plateau(monitor), values, monitor),
            rtol=LR_RTOL,
        )


def test_plateau_maximizes_auc_where_tf_keras_auto_mode_would_minimize_it():
    # Documented difference: tf_keras's auto mode maximizes only names with "acc".
    values = [0.70, 0.75, 0.80, 0.80, 0.80, 0.80, 0.90, 0.91]
    ours_ = plateau_rates(our_plateau("val_auc"), values, "val_auc")
    np.testing.assert_allclose(
        ours_, plateau_rates(keras_plateau("val_auc", "max"), values, "val_auc"), rtol=LR_RTOL
    )
    assert ours_[:5] == pytest.approx([0.4, 0.4, 0.4, 0.4, 0.2])  # lowered on the plateau only
    auto = plateau_rates(keras_plateau("val_auc"), values, "val_auc")
    assert auto[2] == pytest.approx(0.2)  # lowered while AUC climbs


def test_swapped_in_ema_weights_are_the_textbook_moving_average():
    """SwapEMAWeights puts avg_t = m * avg_(t-1) + (1 - m) * w_t (avg_0 = w_0) in the model."""
    momentum = 0.8
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=make_optimizer(
            TrainConfig(optimizer="sgd", learning_rate=0.1, ema={"momentum": momentum})
        ),
        loss="mse",
    )
    raw = [[w.copy() for w in model.get_weights()]]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([w.copy() for w in self.model.get_weights()])

    swap = SwapEMAWeights()
    seen = {}

    class AfterSwap(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["ema"] = [w.copy() for w in self.model.get_weights()]

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[Record(), swap, AfterSwap()],
    )
    average = [w.astype(np.float64) for w in raw[0]]
    for weights in raw[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    assert len(raw) == 9  # 8 updates
    for got, want in zip(seen["ema"], average):
        np.testing.assert_allclose(got, want, rtol=EMA_RTOL, atol=1e-7)
    for got, want in zip(model.get_weights(), average):  # fit ends on the averages
        np.testing.assert_allclose(got, want, rtol=EMA_RTOL, atol=1e-7)
