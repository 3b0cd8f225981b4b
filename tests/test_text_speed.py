"""The Transformer's training speed (issue 22): the norm computes what the
fused tf_keras layer does, older configs load, the attention-weight dropout is an
option, batches of any length share one traced step, a text run records its
tokens per second and MFU, and the automatic precision and batch size work
on a text model."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.layers import LayerNorm
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.models import Head, build_model
from kerastrain.training.throughput import text_throughput

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]


def _texts(rows: int, seed: int = 0) -> pd.DataFrame:
    """Texts of 1 to 20 words; the label says whether "alpha" is in it."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(1, 21))) for _ in range(rows)]
    return pd.DataFrame({"text": texts, "label": [int("alpha" in t.split()) for t in texts]})


def _model(prepared, **options) -> keras.Model:
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    return build_model("transformer", inputs, Head(1, "sigmoid"), options)


# ---------------------------------------------------------------------------- normalization


def test_the_moments_norm_computes_tf_keras_fused_layer_normalization():
    # The norm stays on tf.nn.moments (DTensor cannot lay out the fused kernel,
    # which was not faster here): it is the function of tf_keras's layer, which
    # at the tutorial's epsilon 1e-6 takes the same unfused path; at 1.001e-5
    # (the smallest the fused kernel allows) the fused kernel agrees too.
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (4, 7, 16)), tf.float32)
    ours, fused = LayerNorm(epsilon=1.001e-5), keras.layers.LayerNormalization(epsilon=1.001e-5)
    ours.build(x.shape)
    fused.build(x.shape)
    for layer in (ours, fused):
        layer.set_weights([np.linspace(0.5, 2.0, 16), np.linspace(-1.0, 1.0, 16)])
    assert fused._fused  # FusedBatchNormV3
    tutorials = keras.layers.LayerNormalization(epsilon=1e-6)
    tutorials.build(x.shape)
    assert not tutorials._fused
    results = []
    for layer in (ours, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(16, dtype=tf.float32))
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, rtol=1e-5)


def test_an_older_norm_and_attention_config_loads_unchanged():
    # The configs a `.keras` file of a run before the fused path holds.
    norm = keras.layers.deserialize(
        {
            "class_name": "kerastrain>LayerNorm",
            "config": {
                "name": "block0_norm1",
                "trainable": True,
                "dtype": "float32",
                "epsilon": 1e-6,
            },
        }  # fmt: skip
    )
    assert isinstance(norm, LayerNorm) and norm.epsilon == 1e-6
    assert set(norm.get_config()) == {"name", "trainable", "dtype", "epsilon"}
    attention = keras.layers.MultiHeadAttention(4, 16, dropout=0.1, name="block0_attention")
    again = keras.layers.MultiHeadAttention.from_config(attention.get_config())
    assert again.get_config()["dropout"] == 0.1


@pytest.mark.slow
def test_attention_weight_dropout_is_its_own_option_off_by_default():
    prepared = prepare_data(_texts(40), DataConfig(target="label"), seed=0)
    model = _model(prepared, layers=1, heads=2, d_model=8, dropout=0.2)
    assert model.get_layer("block0_attention").get_config()["dropout"] == 0.0
    assert model.get_layer("block0_dropout1").rate == 0.2
    model = _model(prepared, layers=1, heads=2, d_model=8, attention_dropout=0.1)
    assert model.get_layer("block0_attention").get_config()["dropout"] == 0.1
    with pytest.raises(ConfigError, match="model_options.attention_dropout"):
        _model(prepared, layers=1, heads=2, d_model=8, attention_dropout=1.5)


# -------------------------------------------------------------------------------- retracing


@pytest.mark.slow
def test_batches_of_every_padded_length_share_one_traced_training_step():
    frame = _texts(64)
    frame = frame.iloc[np.argsort(frame["text"].str.count(" ").to_numpy())]  # lengths rise
    prepared = prepare_data(frame, DataConfig(target="label"), seed=0)
    model = _model(prepared, layers=1, heads=2, d_model=8)
    model.compile("adam", "binary_crossentropy")
    x, y = prepared.rows(np.arange(len(frame))), prepared.y.astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    tokenize = model.get_layer("tokenize_text")
    lengths = {int(tokenize(batch["text"]).shape[1]) for batch, _ in data}
    assert len(lengths) >= 4  # the batches really are padded to different lengths
    model.fit(data, epochs=2, verbose=0)
    assert model.train_function.experimental_get_tracing_count() <= 2


# ----------------------------------------------------------------------------- throughput


def test_tokens_per_second_and_mfu_come_from_the_rate_flops_and_peak():
    prepared = prepare_data(_texts(40), DataConfig(target="label"), seed=0)
    model = _model(prepared, layers=1, heads=2, d_model=8)
    history = {"examples_per_second": [5.0, 100.0, 120.0, 80.0]}  # median after the first: 100
    out = text_throughput(model, prepared, history, peak=1e9)
    (column,) = [c for c in prepared.encoding.columns if c.kind == "text"]
    length = model.get_layer("token_embedding").max_length
    tokens = float(np.minimum(column.lengths, length).mean())
    assert out["tokens_per_second"].value == pytest.approx(100.0 * tokens)
    per_token = kerastrain.training.flops.flops_per_token(model)
    assert out["mfu"].value == pytest.approx(3 * per_token * 100.0 * tokens / 1e9)
    assert text_throughput(model, prepared, {}) == {}


@pytest.mark.slow
def test_a_text_run_records_tokens_per_second_mfu_and_its_automatic_choices():
    # batch_size="auto" failed on a text (dict) input: 'dict' object has no attribute 'shape'.
    result = kerastrain.fit_pipeline(
        _texts(96),
        "transformer",
        seed=0,
        data_options={"target": "label"},
        model_options={"layers": 1, "heads": 2, "d_model": 16},
        train={"epochs": 2, "batch_size": "auto", "mixed_precision": "auto", "verbose": 0},
        export={"formats": []},
        report={"explain": "none"},
        output_dir=tempfile.mkdtemp(),
    )
    performance = result.performance
    assert performance["tokens_per_second"].value > 0
    assert 0 < performance["mfu"].value < 1
    assert "GFLOP/s" in performance["mfu"].reason
    assert performance["batch_size"].value >= 1 and "examples/s by batch" in (
        performance["batch_size"].reason
    )
    assert performance["mixed_precision"].value in ("float32", "mixed_bfloat16")
    assert performance["mixed_precision"].reason
    assert "Model FLOPs utilisation" in result.report_path.read_text()
