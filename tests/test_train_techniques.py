"""Training techniques: gradient accumulation, EMA, clipping, precision, XLA options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.callbacks.guard import inner_optimizer
from kerastrain.config import PipelineConfig, TrainConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.task import Task
from kerastrain.training import (
    build_compiled_model,
    compile_model,
    make_datasets,
    run_training,
    train_model,
)
from kerastrain.training.optimizers import accumulate_gradients, make_optimizer


@pytest.fixture(scope="module")
def tabular(breast_cancer_arrays):
    x, y = breast_cancer_arrays
    x = (x - x.mean(0)) / x.std(0)
    return x[:99].astype(np.float32), y[:99].astype(np.float32)


def _mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(
                16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3)
            ),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def _fit(initial, x, y, *, batch, accumulation, optimizer="sgd", **train):
    model = _mlp()
    model.set_weights(initial)
    options = dict(
        optimizer=optimizer,
        learning_rate=0.2,
        gradient_accumulation=accumulation,
        blowup_guard=False,
        optimizer_options={"momentum": 0.9},
        **train,
    )
    compile_model(model, Task("binary"), TrainConfig(**options))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    return model.get_weights(), history.history, int(model.optimizer.iterations)


def test_accumulated_micro_batches_equal_one_large_batch(tabular):
    x, y = tabular  # 99 rows: batches of 32, 32, 32 and 3 (3 micro-batches of 1)
    initial = _mlp().get_weights()
    big, big_logs, big_steps = _fit(initial, x, y, batch=32, accumulation=1)
    acc, acc_logs, acc_steps = _fit(initial, x, y, batch=32, accumulation=4)  # 4 x 8 rows
    assert acc_steps == big_steps == 2 * 4  # one update per batch of 32
    for a, b in zip(acc, big):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy", "auc"):  # metrics accumulate as over the whole batch
        np.testing.assert_allclose(acc_logs[key], big_logs[key], rtol=1e-5)
    # Control: updating after every micro-batch of 8 is a different training.
    small, _, _ = _fit(initial, x, y, batch=8, accumulation=1)
    assert max(float(np.abs(a - b).max()) for a, b in zip(small, big)) > 1e-2


def test_accumulation_can_be_switched_off_again(tabular):
    model = _mlp()
    compile_model(model, Task("binary"), TrainConfig(gradient_accumulation=3))
    assert "train_step" in vars(model)
    accumulate_gradients(model, 1)
    assert "train_step" not in vars(model)


@pytest.mark.slow
def test_run_training_with_techniques_together(tmp_path):
    """Accumulation, EMA, clipping, weight decay, label smoothing, warmup and a
    cosine schedule in one short fit through the training stage."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    cfg = PipelineConfig(
        data=(bunch.data.astype(np.float32), bunch.target),
        seed=3,
        train={
            "epochs": 3,
            "batch_size": 8,
            "gradient_accumulation": 2,
            "ema": True,
            "clipnorm": 1.0,
            "weight_decay": 1e-3,
            "label_smoothing": 0.1,
            "schedule": "cosine",
            "warmup": {"epochs": 1},
            "learning_rate": 0.01,
            "early_stopping": None,
            "verbose": 0,
        },
    )
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    strategy = tf.distribute.get_strategy()
    model, result = run_training(
        cfg.train,
        prepared,
        strategy,
        model_spec=cfg.model,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        backup_dir=tmp_path / "backup",
    )
    n_train = len(prepared.splits.train)
    assert int(model.optimizer.iterations) == 3 * math.ceil(n_train / 16)
    optimizer = model.optimizer
    assert optimizer.use_ema and optimizer.clipnorm == 1.0 and optimizer.weight_decay == 1e-3
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)  # smoothing: one-hot
    history = result.history
    assert len(history["loss"]) == 3 and all(math.isfinite(v) for v in history["loss"])
    assert (
        history["learning_rate"][0] > history["learning_rate"][-1]
    )  # the cosine decays after warmup
    assert all(v > 0 for v in history["examples_per_second"])
    # Validation ran on the averaged weights, which the model ends with.
    _, val_ds = make_datasets(cfg.train, prepared, strategy, batch_size=cfg.batch_size)
    val = model.evaluate(val_ds, verbose=0, return_dict=True)
    assert history["val_accuracy"][-1] == pytest.approx(val["accuracy"], abs=1e-6)
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()


@pytest.mark.slow
def test_ema_validation_uses_the_averaged_weights(tabular):
    x, y = tabular
    model = _mlp()
    train = TrainConfig(
        optimizer="sgd",
        learning_rate=0.5,
        ema={"momentum": 0.5},
        blowup_guard=False,
        early_stopping=None,
        checkpoints=False,
        epochs=2,
        verbose=0,
    )
    compile_model(model, Task("binary"), train)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(40)
    result = train_model(model, ds, val, train, callbacks=[])
    assert len(result.history["val_loss"]) == 2
    # fit wrote the averages into the model; the last validation saw them.
    after = model.evaluate(val, verbose=0, return_dict=True)
    assert result.history["val_loss"][-1] == pytest.approx(after["loss"], rel=1e-5)
    averages = inner_optimizer(model.optimizer)._model_variables_moving_average
    for var, avg in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(var.numpy(), avg.numpy())


def _one_step_change(clip: dict) -> list[np.ndarray]:
    """The change of each variable after one SGD step (rate 1) on large gradients."""
    variables = [tf.Variable(tf.zeros((30, 16))), tf.Variable(tf.zeros((16,)))]
    grads = [tf.fill((30, 16), 2.0), tf.fill((16,), -3.0)]
    optimizer = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=1.0, **clip))
    optimizer.apply_gradients(zip(grads, variables))
    return [v.numpy() for v in variables]


def test_clipping_by_norm_and_by_global_norm():
    free = _one_step_change({})
    assert np.linalg.norm(free[0]) == pytest.approx(2.0 * math.sqrt(30 * 16))
    per_variable = [np.linalg.norm(d) for d in _one_step_change({"clipnorm": 0.5})]
    assert per_variable == pytest.approx([0.5, 0.5], rel=1e-5)  # each clipped alone
    total = _one_step_change({"global_clipnorm": 0.5})
    assert math.sqrt(sum(np.linalg.norm(d) ** 2 for d in total)) == pytest.approx(0.5, rel=1e-5)
    # Clipping all together keeps the direction: the ratio of the two changes.
    assert np.linalg.norm(total[0]) / np.linalg.norm(total[1]) == pytest.approx(
        np.linalg.norm(free[0]) / np.linalg.norm(free[1]), rel=1e-4
    )


def test_precision_policies_and_compile_options(tabular):
    x, y = tabular
    cfg = PipelineConfig(
        data=(x, y.astype(np.int64)),
        model="mlp",
        seed=0,
        train={
            "execution": {
                "mixed_precision": "mixed_bfloat16",
                "steps_per_execution": 4,
                "jit_compile": True,
            }
        },
    )
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    model = build_compiled_model(
        cfg.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec="mlp",
        batch_size=cfg.batch_size,
    )
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense[0].compute_dtype == "bfloat16" and model.output.dtype == tf.float32
    assert model._jit_compile is True and int(model._steps_per_execution) == 4

    half = PipelineConfig(
        data=(x, y.astype(np.int64)),
        model="mlp",
        seed=0,
        train={"execution": {"mixed_precision": "mixed_float16"}, "gradient_accumulation": 2},
    )
    model = build_compiled_model(
        half.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec="mlp",
        batch_size=half.batch_size,
    )
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    logs = model.train_on_batch(x[:16], y[:16].astype(np.int64), return_dict=True)
    assert math.isfinite(logs["loss"]) and int(model.optimizer.iterations) == 1
