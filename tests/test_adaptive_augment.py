"""Adaptive augmentation (``data_options.augment="auto"``): its options, the
magnitude rule, the augmentation reading the magnitude's variable, and the
magnitude following over- and under-fitting in real training."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig, TrainConfig, load_config
from kerastrain.config.adaptive import parse_auto
from kerastrain.data.adaptive import magnitude_variable
from kerastrain.data.feed import training_datasets
from kerastrain.data.prepare import prepare_data
from kerastrain.task import Task
from kerastrain.training import compile_model, run_training, train_model
from kerastrain.training.adaptive_augment import AdaptiveAugmentation, next_magnitude

POLICY = parse_auto("auto")


def test_auto_parses_and_bad_policy_options_are_config_errors():
    assert POLICY["max_magnitude"] == 1.0 and POLICY["patience"] == 2
    assert parse_auto({"policy": "auto", "max_magnitude": 0.5, "initial": 0.8})["initial"] == 0.5
    assert parse_auto("light") is None
    with pytest.raises(ConfigError, match=r"augment\.max_magnitude' option must be a number in"):
        DataConfig(augment={"policy": "auto", "max_magnitude": 2})
    with pytest.raises(ConfigError, match=r"augment\.patiense' option must be one of"):
        DataConfig(augment={"policy": "auto", "patiense": 2})


def test_the_rule_rises_on_a_growing_gap_falls_on_underfitting_and_stays_in_bounds():
    growing = {"loss": [1.0, 0.6, 0.4, 0.25], "val_loss": [1.0, 0.8, 0.8, 0.85]}
    assert next_magnitude(growing, 0.3, POLICY)[0] == pytest.approx(0.4)
    assert next_magnitude(growing, 1.0, POLICY)[0] == 1.0  # capped at max_magnitude
    flat = {"loss": [2.30, 2.30, 2.30, 2.30, 2.30], "val_loss": [2.31, 2.31, 2.31, 2.31, 2.31]}
    value, why = next_magnitude(flat, 0.3, POLICY)
    assert value == pytest.approx(0.2) and "under-fitting" in why
    assert next_magnitude(flat, 0.0, POLICY)[0] == 0.0
    steady = {"loss": [1.0, 0.5, 0.3, 0.2], "val_loss": [1.0, 0.6, 0.4, 0.3]}
    assert next_magnitude(steady, 0.3, POLICY)[0] == 0.3


def test_restore_replays_the_records_of_an_interrupted_fit():
    records = [
        {"epoch": i, "loss": t, "val_loss": v, "augment_magnitude": m}
        for i, (t, v, m) in enumerate(
            [(1.0, 1.0, 0.3), (0.6, 0.8, 0.3), (0.4, 0.8, 0.3), (0.25, 0.85, 0.4)]
        )
    ]
    callback = AdaptiveAugmentation(magnitude_variable(0.3), POLICY)
    callback.restore(records)
    assert float(callback.variable.numpy()) == pytest.approx(0.5)  # rose after epochs 3 and 4
    assert callback.history["loss"] == [1.0, 0.6, 0.4, 0.25]


def test_the_augmentation_reads_the_variable_on_every_batch(digits_arrays):
    x, y = digits_arrays
    prepared = prepare_data(
        (x[:80], y[:80]), DataConfig(augment="auto", test_split=0.0, validation_split=0.2), seed=0
    )
    assert [a["name"] for a in prepared.augment] == [
        "rotation",
        "zoom",
        "translation",
        "contrast",
        "mixup",
    ]
    magnitude = magnitude_variable(0.0)
    train_ds, _ = training_datasets(prepared, 1024, seed=0, one_hot_depth=10, magnitude=magnitude)
    clean = prepared.rows(prepared.splits.train)
    batch_x, batch_y = (t.numpy() for t in next(iter(train_ds)))
    # Magnitude 0: the identity (the batch is a shuffle of the clean rows, labels unmixed).
    np.testing.assert_allclose(np.sort(batch_x.ravel()), np.sort(clean.ravel()), atol=1e-3)
    assert set(np.unique(batch_y)) == {0.0, 1.0}
    magnitude.assign(1.0)  # the same dataset, no rebuild
    batch_x, batch_y = (t.numpy() for t in next(iter(train_ds)))
    assert not np.allclose(np.sort(batch_x.ravel()), np.sort(clean.ravel()), atol=1e-3)
    assert len(np.unique(batch_y)) > 2  # mixed labels
    assert batch_x.shape[1:] == (8, 8, 1) and batch_x.min() >= 0.0 and batch_x.max() <= 255.0


def _fit(data, model, epochs, initial, tmp_path, **train):
    cfg = load_config(
        None,
        data=data,
        model=model,
        seed=0,
        data_options={
            "augment": {"policy": "auto", "initial": initial, "patience": 2},
            "validation_split": 0.3,
            "test_split": 0.0,
        },
        train={
            "epochs": epochs,
            "verbose": 0,
            "early_stopping": None,
            "batch_size": 32,
            "checkpoints": False,
            "execution": {"mixed_precision": "float32", "jit_compile": False},
            **train,
        },
    )
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    _, result = run_training(
        cfg.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec=cfg.model,
        model_options=cfg.model_options,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        backup_dir=tmp_path / "backup",
    )
    return result.history


@pytest.mark.slow
def test_magnitude_rises_on_an_overfitting_set_and_falls_on_an_underfitting_one(
    digits_arrays, tmp_path
):
    x, y = digits_arrays
    # 150 images and a wide MLP: the validation loss pulls away from the training loss.
    over = _fit((x[:150], y[:150]), "mlp", 8, 0.0, tmp_path / "o", learning_rate=3e-3)
    assert len(over["augment_magnitude"]) == 8
    assert over["augment_magnitude"][0] == 0.0 and over["augment_magnitude"][-1] > 0.0

    def tiny(input_shape, num_outputs):  # one unit after pooling: cannot fit 10 classes
        inp = keras.Input(input_shape)
        h = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inp))
        return keras.Model(inp, keras.layers.Dense(num_outputs, activation="softmax")(h))

    under = _fit((x[:150], y[:150]), tiny, 6, 0.5, tmp_path / "u", learning_rate=1e-4)
    assert under["augment_magnitude"][0] == 0.5 and under["augment_magnitude"][-1] < 0.5


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_a_resumed_fit_restores_the_magnitude(breast_cancer_arrays, tmp_path):
    x, y = breast_cancer_arrays
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    train_ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(64)
    # Validation labels flipped: the better the fit, the wider the gap, so the magnitude rises.
    val_ds = tf.data.Dataset.from_tensor_slices((x, 1.0 - y.astype(np.float32))).batch(256)
    policy = parse_auto({"policy": "auto", "initial": 0.3, "patience": 1})
    cfg = TrainConfig(
        epochs=5, early_stopping=None, verbose=0, checkpoints=False, backup={"interval": 0}
    )

    def fit(callbacks=()):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((30,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1, "sigmoid")]
        )
        compile_model(model, Task("binary"), cfg.replace(learning_rate=0.01))
        augment = AdaptiveAugmentation(magnitude_variable(policy["initial"]), policy)
        result = train_model(
            model, train_ds, val_ds, cfg, backup_dir=tmp_path, callbacks=callbacks, augment=augment
        )
        return result

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit([_Crash()])
    result = fit()
    assert result.resumed_at == 4
    used = result.history["augment_magnitude"]
    assert len(used) == 5 and used[3] > 0.3  # not back at the initial value
    for epoch in range(1, 5):  # each epoch's value follows from the ones before, across the crash
        history = {k: result.history[k][:epoch] for k in ("loss", "val_loss")}
        assert used[epoch] == pytest.approx(next_magnitude(history, used[epoch - 1], policy)[0])
