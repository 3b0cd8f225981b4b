"""Activation recomputation (`train.recompute`): same gradients and losses as
the plain model, the blocks of every built-in factory found, the plain model
handed on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig, PipelineConfig, TrainConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.errors import ConfigError
from kerastrain.models import Head, build_model
from kerastrain.training import fit as fit_module
from kerastrain.training import run_training
from kerastrain.training.flops import layer_calls
from kerastrain.training.memory import _call_bytes, plan_memory
from kerastrain.training.recompute import (
    RecomputedBlock,
    block_nodes,
    find_blocks,
    recompute_twin,
)
from kerastrain.training.run import find_learning_rate

DEEP = {"width": 16, "depth": 6, "residual": True, "batch_norm": True, "dropout": 0.0}


def _inputs(shape):
    return model_inputs(shape, None, None)


def _deep_mlp(**options):
    return build_model("mlp", _inputs((10,)), Head(1, "sigmoid"), {**DEEP, **options})


def _loss_and_grads(model, x, y, variables=None):
    """The loss and its gradients for ``variables`` (``model``'s by default:
    pass the plain model's to compare a twin's gradients weight by weight)."""
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    return loss, tape.gradient(loss, variables or model.trainable_variables)


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


# ------------------------------------------------------------------ the Transformer

WORDS = ["great", "awful", "the", "a", "movie", "plot", "was", "very", "it", "sad"]


def _reviews(rows=48):
    """Short reviews (the label is whether "great" outnumbers "awful")
    beside a numeric and a categorical column."""
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(rows)]
    label = [int(t.count("great") >= t.count("awful")) for t in text]
    return pd.DataFrame(
        {
            "review": text,
            "score": rng.normal(size=rows).astype(np.float32),
            "kind": [["x", "y"][i % 3 == 0] for i in range(rows)],
            "label": label,
        }
    )


def _text_transformer(frame, **options):
    prepared = prepare_data(frame, DataConfig(target="label"), seed=0)
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    options = {"layers": 2, "heads": 2, "d_model": 16, "dropout": 0.0, **options}
    return build_model("transformer", inputs, Head(1, "sigmoid"), options)


def _rows(frame):
    return {
        "review": frame["review"].to_numpy(object),
        "score": frame["score"].to_numpy(np.float32),
        "kind": frame["kind"].to_numpy(object),
    }


def test_the_transformers_blocks_are_found_with_the_mask_and_features_beside_them():
    model = _text_transformer(_reviews())
    twin = recompute_twin(model)
    recomputed = [layer for layer in twin.layers if isinstance(layer, RecomputedBlock)]
    # Each pre-norm block is two recomputed blocks, its attention and its MLP
    # (a residual each); the last runs on to the joined features.
    assert [layer.name for layer in recomputed] == [
        "recompute_block0_norm1",
        "recompute_block0_norm2",
        "recompute_block1_norm1",
        "recompute_block1_norm2",
    ]
    # The padding mask enters each attention block as an argument, beside the
    # running activations; the table's features enter the last one.
    inputs = [
        [t._keras_history.layer.name for t in layer.inbound_nodes[0].keras_inputs]
        for layer in recomputed
    ]
    assert inputs[0] == ["position_embedding", "padding_mask"]
    assert inputs[1] == ["recompute_block0_norm1"]
    assert inputs[2] == ["recompute_block0_norm2", "padding_mask"]
    assert inputs[3] == ["recompute_block1_norm1", "padding_mask", "features"]
    assert len(find_blocks(model)) == 4
    with pytest.raises(ConfigError, match=r"at most 4"):
        recompute_twin(model, 5)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_the_transformer_twins_gradients_equal_the_plain_models(graph):
    frame = _reviews()
    model = _text_transformer(frame)
    twin = recompute_twin(model, 3)
    x = _rows(frame)
    y = frame["label"].to_numpy(np.float32)[:, None]
    run = tf.function(_loss_and_grads) if graph else _loss_and_grads
    loss, grads = run(model, x, y)
    twin_loss, twin_grads = run(twin, x, y, model.trainable_variables)
    assert float(twin_loss) == pytest.approx(float(loss), abs=1e-6)
    assert len(grads) == len(twin_grads) == len(model.trainable_variables)
    for a, b in zip(grads, twin_grads):
        a, b = (tf.convert_to_tensor(g).numpy() for g in (a, b))
        assert np.abs(a).max() > 0  # every weight gets its gradient (none captured)
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_transformer_with_dropout_in_its_blocks_is_refused_and_the_log_says_why(caplog):
    model = _text_transformer(_reviews(), dropout=0.1)
    with caplog.at_level("WARNING", logger="kerastrain.training.recompute"):
        with pytest.raises(ConfigError, match=r"no block to recompute.*block0_dropout1.*dropout=0"):
            recompute_twin(model)
    assert "block0_norm1 plain: it holds block0_dropout1" in caplog.text
    # Dropout on the attention weights, inside MultiHeadAttention, counts too.
    model = _text_transformer(_reviews(), attention_dropout=0.1)
    assert [len(block) for block in block_nodes(model)] == [
        4,
        7,
    ]  # the MLPs only (the last to `joined`)


def test_the_memory_plan_frees_the_transformer_blocks_insides():
    model = _text_transformer(_reviews(), max_length=32)
    plain = plan_memory(model, TrainConfig(), batch_size=8, precision="float32")
    kept = plan_memory(model, TrainConfig(recompute=True), batch_size=8, precision="float32")
    # Each call's bytes per example as the plan counts them (attention
    # scores included, the sequence at max_length).
    per_call = dict(zip([n.layer.name for n in layer_calls(model)], _call_bytes(model, half=False)))
    assert per_call["block0_attention"] > 2 * 2 * 32 * 32 * 4  # scores and softmax in it
    blocks = [
        ["block0_norm1", "block0_attention", "block0_residual1"],
        ["block0_norm2", "block0_mlp_in", "block0_mlp_out", "block0_residual2"],
        ["block1_norm1", "block1_attention", "block1_residual1"],
        ["block1_norm2", "block1_mlp_in", "block1_mlp_out", "block1_residual2", "final_norm"]
        + ["pool", "joined"],
    ]
    inside = sum(per_call[name] for block in blocks for name in block[:-1])  # outputs stay
    widest = max(sum(per_call[name] for name in block) for block in blocks)
    # Every block's inside is freed but for the widest one's, recomputed in turn.
    assert plain.activations - kept.activations == 8 * (inside - widest)
    assert kept.activations < plain.activations


@pytest.mark.slow
def test_fit_pipeline_recomputes_the_transformer_to_the_same_loss_and_ships_it_plain(tmp_path):
    results = {}
    for recompute in (False, True):  # the plain run only for its loss
        results[recompute] = kerastrain.fit_pipeline(
            _reviews(96),
            "transformer",
            seed=0,
            data_options={"target": "label"},
            model_options={"layers": 2, "heads": 2, "d_model": 16, "dropout": 0.0},
            train={
                "epochs": 1,
                "batch_size": 16,
                "verbose": 0,
                "early_stopping": None,
                "recompute": recompute,
                "execution": {
                    "mixed_precision": "float32",
                    "jit_compile": False,
                    "steps_per_execution": 1,
                },
            },
            export={"formats": ["savedmodel"] if recompute else [], "latency_runs": 0},
            report={"explain": "none"},
            output_dir=str(tmp_path / f"run_{recompute}"),
        )
    plain, recomputed = results[False], results[True]
    assert recomputed.history["loss"][0] == pytest.approx(plain.history["loss"][0], abs=1e-5)
    # What ships is the plain model, its parity checked like any other.
    assert not any(isinstance(layer, RecomputedBlock) for layer in recomputed.model.layers)
    assert recomputed.metrics["savedmodel"]["max_abs_diff"] < 1e-4
    for a, b in zip(plain.model.get_weights(), recomputed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_side_input_with_weights_behind_it_gets_its_gradient_through_the_block():
    x, z = keras.Input((8,), name="x"), keras.Input((4,), name="z")
    a = keras.layers.Dense(8, name="a")(x)
    side = keras.layers.Dense(8, name="side")(z)
    h = keras.layers.Dense(8, activation="tanh", name="b")(a)
    h = keras.layers.Add(name="join")([h, side])
    h = keras.layers.Dense(8, activation="tanh", name="c")(h)
    model = keras.Model([x, z], keras.layers.Dense(1, name="out")(h))
    twin = recompute_twin(model)
    recomputed = [layer for layer in twin.layers if isinstance(layer, RecomputedBlock)]
    assert [layer.name for layer in recomputed] == ["recompute_a", "recompute_b", "recompute_c"]
    assert len(recomputed[1].inbound_nodes[0].keras_inputs) == 2  # a's output and side's
    data = [
        tf.random.stateless_normal((16, 8), (1, 1)),
        tf.random.stateless_normal((16, 4), (2, 2)),
    ]
    y = tf.ones((16, 1))
    loss, grads = _loss_and_grads(model, data, y)
    twin_loss, twin_grads = _loss_and_grads(twin, data, y, model.trainable_variables)
    assert float(twin_loss) == pytest.approx(float(loss), abs=1e-6)
    for variable, a_, b_ in zip(model.trainable_variables, grads, twin_grads):
        assert b_ is not None, variable.name  # "side" would get none if captured
        np.testing.assert_allclose(a_.numpy(), b_.numpy(), atol=1e-6)
