"""Training techniques against what they stand for: gradient accumulation
against one large batch, the weights' exponential moving average against the
textbook recursion.

- Gradient accumulation: `train.gradient_accumulation = k` with batches of
  `k * b` rows must take the same optimizer steps as one batch of `k * b` rows
  without it (the definition of the technique: the gradient of the mean loss
  over the large batch, in pieces).
- EMA: ``avg_0 = w_0``, ``avg_t = m * avg_(t-1) + (1 - m) * w_t`` after each
  update `t` (Polyak & Juditsky's averaging with exponential weights; tf_keras's
  optimizer and TensorFlow's `ExponentialMovingAverage` without `num_updates`).
"""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.config import TrainConfig
from kerastrain.task import Task
from kerastrain.training import compile_model
from kerastrain.training.optimizers import make_optimizer

#: Accumulated and whole-batch gradients are the same sums in a different order
#: (float32): after 8 updates the weights agree to a few float32 roundings; Adam
#: divides by sqrt(v), which magnifies them a little (measured: 4e-7 at most).
ACCUMULATION_RTOL = 2e-5
ACCUMULATION_ATOL = 2e-6
#: The optimizer's average is a float32 recursion, 8 steps, against float64.
EMA_RTOL = 1e-5


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("steps,batch", [(4, 32), (4, 30)], ids=["even", "uneven"])
def test_gradient_accumulation_equals_one_large_batch(optimizer, steps, batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * batch, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8 * batch)
    weights = rng.uniform(0.5, 2.0, 8 * batch).astype(np.float32)  # sample weights too
    task = Task("multiclass", 3)
    models = []
    for accumulation in (steps, 1):
        model = tiny_model()
        train = TrainConfig(
            optimizer=optimizer,
            optimizer_options={"momentum": 0.9} if optimizer == "sgd" else {},
            learning_rate=0.05,
            gradient_accumulation=accumulation,
        )
        compile_model(model, task, train)
        history = model.fit(
            x, y, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0
        )
        models.append((model, history.history))
    (accumulated, acc_history), (whole, whole_history) = models
    assert int(accumulated.optimizer.iterations) == int(whole.optimizer.iterations) == 8
    for got, want in zip(accumulated.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=ACCUMULATION_RTOL, atol=ACCUMULATION_ATOL)
    for key in ("loss", "accuracy"):
        assert acc_history[key] == pytest.approx(whole_history[key], rel=ACCUMULATION_RTOL)


def test_optimizer_ema_is_the_textbook_moving_average():
    momentum = 0.9
    optimizer = make_optimizer(
        TrainConfig(optimizer="adam", learning_rate=0.05, ema={"momentum": momentum})
    )
    rng = np.random.default_rng(2)
    start = rng.normal(size=(4, 3))
    variable = tf.Variable(start, dtype=tf.float32)
    raw, average = [], start.copy()
    for _ in range(8):
        optimizer.apply_gradients([(tf.constant(rng.normal(size=(4, 3)), tf.float32), variable)])
        raw.append(variable.numpy().astype(np.float64))
        average = momentum * average + (1 - momentum) * raw[-1]
    optimizer.finalize_variable_values([variable])
    np.testing.assert_allclose(variable.numpy(), average, rtol=EMA_RTOL, atol=1e-7)
    assert np.max(np.abs(average - raw[-1])) > 1e-3  # the average is not the last weights
