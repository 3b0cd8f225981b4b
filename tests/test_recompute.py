"""Activation recomputation (`train.recompute`): same gradients and losses as
the plain model, the blocks of every built-in factory found, the plain model
handed on."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.errors import ConfigError
from kerastrain.models import Head, build_model
from kerastrain.training import fit as fit_module
from kerastrain.training import run_training
from kerastrain.training.recompute import RecomputedBlock, find_blocks, recompute_twin
from kerastrain.training.run import find_learning_rate

DEEP = {"width": 16, "depth": 6, "residual": True, "batch_norm": True, "dropout": 0.0}


def _inputs(shape):
    return model_inputs(shape, None, None)


def _deep_mlp(**options):
    return build_model("mlp", _inputs((10,)), Head(1, "sigmoid"), {**DEEP, **options})


def _loss_and_grads(model, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_twin_gradients_and_moving_averages_equal_the_plain_model(graph):
    model = _deep_mlp()
    twin = recompute_twin(model)
    assert sum(isinstance(layer, RecomputedBlock) for layer in twin.layers) == 6
    x = tf.random.stateless_normal((64, 10), seed=(1, 2))
    y = tf.cast(tf.reduce_sum(x, 1, keepdims=True) > 0, tf.float32)
    run = tf.function(_loss_and_grads) if graph else _loss_and_grads
    start = [v.numpy() for v in model.non_trainable_variables]
    loss, grads = run(model, x, y)
    moved = [v.numpy() for v in model.non_trainable_variables]
    for variable, value in zip(model.non_trainable_variables, start):
        variable.assign(value)
    twin_loss, twin_grads = run(twin, x, y)
    assert float(twin_loss) == pytest.approx(float(loss), abs=1e-6)
    for a, b in zip(grads, twin_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # The recomputation puts the moving averages back: they move once a step.
    assert any(np.abs(a - b).max() > 0 for a, b in zip(start, moved))
    for a, b in zip(moved, [v.numpy() for v in model.non_trainable_variables]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_blocks_of_the_cnn_and_resnet_factories():
    images = _inputs((8, 8, 1))
    cnn = build_model("cnn", images, Head(3, "softmax"), {"depth": 2})
    assert len(find_blocks(cnn)) == 3  # two conv blocks and the dense layer
    resnet = build_model("resnet", _inputs((8, 8, 1)), Head(3, "softmax"), {"depth": 2})
    twin = recompute_twin(resnet)
    names = [layer.name for layer in twin.layers if isinstance(layer, RecomputedBlock)]
    # The stem, then one block per residual block (its shortcut inside it).
    assert names == [
        "recompute_stem_conv",
        "recompute_stage0_block0_conv1",
        "recompute_stage0_block1_conv1",
        "recompute_stage1_block0_conv1",
        "recompute_stage1_block1_conv1",
    ]
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(twin(x).numpy(), resnet(x).numpy(), atol=1e-6)


def test_dropout_stays_outside_the_blocks_and_a_block_count_is_checked():
    model = _deep_mlp(dropout=0.2)
    twin = recompute_twin(model, 2)
    kinds = [type(layer).__name__ for layer in twin.layers[1:]]
    assert kinds[:4] == ["RecomputedBlock", "Dropout", "RecomputedBlock", "Dropout"]
    assert kinds.count("RecomputedBlock") == 2
    with pytest.raises(ConfigError, match=r"train\.recompute.*at most 6"):
        recompute_twin(model, 7)


@pytest.mark.slow
def test_recompute_trains_to_the_same_first_epoch_loss(breast_cancer_arrays):
    x, y = breast_cancer_arrays
    losses, steps = {}, {}
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        cfg = PipelineConfig(
            data=(x[:160], y[:160]),
            model="mlp",
            model_options=DEEP,
            seed=0,
            train={
                "epochs": 1,
                "batch_size": 32,
                "verbose": 0,
                "early_stopping": None,
                "recompute": recompute,
                "execution": {"mixed_precision": "float32"},
            },
        )
        prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
        model, result = run_training(
            cfg.train,
            prepared,
            tf.distribute.get_strategy(),
            model_spec=cfg.model,
            model_options=cfg.model_options,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        losses[recompute] = result.history["loss"]
        # The plain model comes back, trained through the shared variables.
        assert not any(isinstance(layer, RecomputedBlock) for layer in model.layers)
        steps[recompute] = int(model.optimizer.iterations)
    assert steps[True] == steps[False] > 0  # the plain model's optimizer did the updates
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    assert losses[True][0] < 5  # trained: a finite, sane loss


@pytest.mark.slow
def test_the_learning_rate_range_test_probes_the_recomputing_twin(
    breast_cancer_arrays, monkeypatch
):
    x, y = breast_cancer_arrays
    cfg = PipelineConfig(
        data=(x[:96], y[:96]),
        model="mlp",
        model_options=DEEP,
        seed=0,
        train={
            "learning_rate": "find",
            "batch_size": 32,
            "recompute": True,
            "lr_finder": {"steps": 6},
            "execution": {"mixed_precision": "float32"},
        },
    )
    probes = []
    sweep = fit_module.kcb.lr_range_test

    def recorded(model, *args, **kwargs):
        result = sweep(model, *args, **kwargs)
        probes.append((model, result))
        return result

    monkeypatch.setattr(fit_module.kcb, "lr_range_test", recorded)
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    train = find_learning_rate(
        cfg.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec=cfg.model,
        model_options=cfg.model_options,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    ((probe, sweep_result),) = probes
    # The sweep ran on the twin whose blocks recompute (as the run's fit will).
    assert sum(isinstance(layer, RecomputedBlock) for layer in probe.layers) >= 2
    assert len(sweep_result.losses) == 6 and np.isfinite(sweep_result.losses[0])
    assert train.learning_rate == pytest.approx(sweep_result.suggestion)
