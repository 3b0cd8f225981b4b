"""Every optimizer name, weight decay, gradient clipping and the losses (label
smoothing included) against tf_keras's own classes and the published update
rules computed with NumPy.

Optimizers: the optimizer `make_optimizer` builds from `TrainConfig` and
tf_keras's class built by hand with the same options each apply the same 8
gradients to the same two variables. The textbook rules, in float64: SGD with
momentum and Nesterov momentum (PyTorch's `SGD`), Adam and AdamW (Kingma & Ba
2015, Algorithm 1; Loshchilov & Hutter 2019, decoupled weight decay, as
PyTorch's `AdamW`), norm clipping (Pascanu et al. 2013).

Losses: `make_loss` for each task against tf_keras's loss with the same options
and the textbook cross-entropy with smoothed targets, ``(1 - eps) * y + eps / K``
(Szegedy et al. 2016, "Rethinking the Inception architecture", section 7).
"""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.config import TrainConfig
from kerastrain.config.train import OPTIMIZER_OPTIONS
from kerastrain.task import Task
from kerastrain.training.losses import make_loss, one_hot_labels
from kerastrain.training.optimizers import OPTIMIZER_CLASSES, make_optimizer

#: kerastrain's optimizer and tf_keras's are the same class running the same
#: float32 operations: after 8 updates they agree to the last bit or two. Each
#: option value in `OPTIONS` moves the result by 4e-5 (amsgrad, the smallest)
#: or more, so a dropped or misnamed option fails this.
SAME_CLASS_RTOL = 1e-6
#: float32 updates against the float64 textbook rules, 8 steps.
TEXTBOOK_RTOL = 1e-5
#: Adam: tf_keras adds epsilon to sqrt(v) before the bias correction of v
#: (Kingma & Ba's "more efficient" ordering, section 2), Algorithm 1 after it;
#: with epsilon 1e-7 and gradients of order 1 the two differ by ~1e-7 per step.
ADAM_RTOL = 1e-5
#: Losses in float32 against float64 NumPy.
LOSS_RTOL = 1e-6

LR = 0.05
UPDATES = 8
#: Non-default values of every option each optimizer accepts, so that a dropped
#: option changes the result (epsilon 0.1, large enough to matter).
OPTIONS = {
    "sgd": {"momentum": 0.9, "nesterov": True},
    "adam": {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 0.1, "amsgrad": True},
    "adamw": {"beta_1": 0.85, "beta_2": 0.995, "epsilon": 0.1, "amsgrad": True},
    "rmsprop": {"rho": 0.8, "momentum": 0.5, "epsilon": 0.1, "centered": True},
    "adagrad": {"initial_accumulator_value": 0.2, "epsilon": 0.1},
    "nadam": {"beta_1": 0.85, "beta_2": 0.99, "epsilon": 0.1},
}


def initial_values() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(3, 2)), rng.normal(size=(2,))]


def gradients() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return [[rng.normal(size=(3, 2)), rng.normal(size=(2,))] for _ in range(UPDATES)]


def apply(optimizer) -> list[np.ndarray]:
    variables = [tf.Variable(v, dtype=tf.float32) for v in initial_values()]
    for grads in gradients():
        optimizer.apply_gradients(zip([tf.constant(g, tf.float32) for g in grads], variables))
    return [v.numpy() for v in variables]


def assert_all_close(got, want, rtol):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * 1e-2)


def test_every_optimizer_name_is_covered():
    assert set(OPTIONS) == set(OPTIMIZER_CLASSES) == set(OPTIMIZER_OPTIONS)
    for name, options in OPTIONS.items():
        assert set(options) == set(OPTIMIZER_OPTIONS[name])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_optimizer_after_8_updates_equals_tf_keras(name, weight_decay):
    train = TrainConfig(
        optimizer=name, optimizer_options=OPTIONS[name], learning_rate=LR, weight_decay=weight_decay
    )
    reference = OPTIMIZER_CLASSES[name](
        learning_rate=LR, weight_decay=weight_decay, **OPTIONS[name]
    )
    assert_all_close(apply(make_optimizer(train)), apply(reference), SAME_CLASS_RTOL)


@pytest.mark.parametrize("clip", [{"clipnorm": 0.5}, {"global_clipnorm": 0.5}])
def test_clipping_equals_tf_keras_and_the_norm_clipping_rule(clip):
    train = TrainConfig(optimizer="sgd", learning_rate=LR, **clip)
    got = apply(make_optimizer(train))
    assert_all_close(got, apply(keras.optimizers.SGD(LR, **clip)), SAME_CLASS_RTOL)
    weights = initial_values()
    for grads in gradients():
        if "clipnorm" in clip:
            grads = [g * min(1.0, 0.5 / np.linalg.norm(g)) for g in grads]
        else:
            total = np.sqrt(sum(np.sum(g**2) for g in grads))
            grads = [g * min(1.0, 0.5 / total) for g in grads]
        weights = [w - LR * g for w, g in zip(weights, grads)]
    assert_all_close(got, weights, TEXTBOOK_RTOL)


def textbook_sgd(momentum, nesterov, weight_decay=0.0, coupled=False):
    """PyTorch's SGD (dampening 0); weight decay decoupled unless `coupled` (L2)."""
    weights = initial_values()
    buffers = [np.zeros_like(w) for w in weights]
    for grads in gradients():
        out = []
        for k, (w, g) in enumerate(zip(weights, grads)):
            if coupled:
                g = g + weight_decay * w
            else:
                w = w * (1 - LR * weight_decay)
            buffers[k] = momentum * buffers[k] + g
            step = g + momentum * buffers[k] if nesterov else buffers[k]
            out.append(w - LR * step)
        weights = out
    return weights


def textbook_adam(beta_1, beta_2, epsilon, weight_decay=0.0):
    """Kingma & Ba's Algorithm 1; weight decay as Loshchilov & Hutter (PyTorch AdamW)."""
    weights = initial_values()
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, grads in enumerate(gradients(), start=1):
        out = []
        for k, (w, g) in enumerate(zip(weights, grads)):
            w = w * (1 - LR * weight_decay)
            m[k] = beta_1 * m[k] + (1 - beta_1) * g
            v[k] = beta_2 * v[k] + (1 - beta_2) * g**2
            m_hat, v_hat = m[k] / (1 - beta_1**t), v[k] / (1 - beta_2**t)
            out.append(w - LR * m_hat / (np.sqrt(v_hat) + epsilon))
        weights = out
    return weights


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.02])
def test_sgd_equals_the_textbook_momentum_rule_with_decoupled_decay(nesterov, weight_decay):
    train = TrainConfig(
        optimizer="sgd",
        optimizer_options={"momentum": 0.9, "nesterov": nesterov},
        learning_rate=LR,
        weight_decay=weight_decay,
    )
    got = apply(make_optimizer(train))
    assert_all_close(got, textbook_sgd(0.9, nesterov, weight_decay), TEXTBOOK_RTOL)


def test_weight_decay_is_decoupled_not_pytorchs_l2_penalty():
    # Documented difference: with momentum, L2 (PyTorch's SGD weight_decay) differs.
    train = TrainConfig(
        optimizer="sgd", optimizer_options={"momentum": 0.9}, learning_rate=LR, weight_decay=0.5
    )
    got = apply(make_optimizer(train))
    coupled = textbook_sgd(0.9, False, 0.5, coupled=True)
    assert max(np.max(np.abs(g - c)) for g, c in zip(got, coupled)) > 1e-3


@pytest.mark.parametrize("name,weight_decay", [("adam", 0.0), ("adamw", 0.0), ("adamw", 0.05)])
def test_adam_and_adamw_equal_the_textbook_rules(name, weight_decay):
    train = TrainConfig(
        optimizer=name,
        optimizer_options={"beta_1": 0.8, "beta_2": 0.99},
        learning_rate=LR,
        weight_decay=weight_decay,
    )
    got = apply(make_optimizer(train))
    assert_all_close(got, textbook_adam(0.8, 0.99, 1e-7, weight_decay), ADAM_RTOL)


def test_adamw_without_weight_decay_does_not_decay_unlike_tf_keras_default():
    # Documented difference: tf_keras's AdamW decays by 0.004 unless told otherwise.
    assert make_optimizer(TrainConfig(optimizer="adamw")).weight_decay == 0.0
    assert keras.optimizers.AdamW().weight_decay == pytest.approx(0.004)


# ------------------------------------------------------------------------- losses


def textbook_cross_entropy(targets: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(-np.sum(targets * np.log(proba), axis=1)))


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(64, 5))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rng.integers(0, 5, 64), proba, rng.integers(0, 2, 64), rng.uniform(0.05, 0.95, 64)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_multiclass_loss_equals_tf_keras_and_smoothed_cross_entropy(predictions, smoothing):
    y, proba, _, _ = predictions
    task = Task("multiclass", 5)
    train = TrainConfig(label_smoothing=smoothing)
    loss = make_loss(task, train)
    onehot = np.eye(5)[y]
    labels = onehot if one_hot_labels(task, train) else y  # what the input pipeline feeds
    assert one_hot_labels(task, train) == (smoothing > 0)
    got = float(loss(labels, proba.astype(np.float32)))
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    assert got == pytest.approx(float(reference(onehot, proba.astype(np.float32))), rel=LOSS_RTOL)
    smoothed = (1 - smoothing) * onehot + smoothing / 5
    assert got == pytest.approx(textbook_cross_entropy(smoothed, proba), rel=LOSS_RTOL)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_binary_loss_equals_tf_keras_and_smoothed_cross_entropy(predictions, smoothing):
    _, _, y, p = predictions
    loss = make_loss(Task("binary", 2), TrainConfig(label_smoothing=smoothing))
    column = y.reshape(-1, 1).astype(np.float32)
    got = float(loss(column, p.reshape(-1, 1).astype(np.float32)))
    reference = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    assert got == pytest.approx(float(reference(column, p.reshape(-1, 1))), rel=LOSS_RTOL)
    target = (1 - smoothing) * y + smoothing / 2  # K = 2 classes
    assert got == pytest.approx(
        textbook_cross_entropy(np.stack([1 - target, target], 1), np.stack([1 - p, p], 1)),
        rel=LOSS_RTOL,
    )


def test_regression_loss_is_mean_squared_error(predictions):
    _, proba, _, p = predictions
    loss = make_loss(Task("regression"), TrainConfig())
    y = proba[:, 0]
    got = float(loss(y.reshape(-1, 1).astype(np.float32), p.reshape(-1, 1).astype(np.float32)))
    assert got == pytest.approx(np.mean((y - p) ** 2), rel=LOSS_RTOL)
