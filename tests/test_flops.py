"""FLOP counts checked against hand-computed figures; the measured matmul peak."""

from __future__ import annotations

import logging

import pytest

from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.training.flops import forward_flops, matmul_peak_flops, training_flops

layers = keras.layers


def test_dense_counts_two_flops_per_multiply_add():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(3, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(2),
        ]
    )
    assert forward_flops(model) == 2 * (4 * 3 + 3 * 2)  # 36; bias, relu, dropout: 0
    assert training_flops(model) == 3 * 36


def test_dense_on_a_sequence_counts_every_position():
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, layers.Dense(3)(inputs))
    assert forward_flops(model) == 2 * 4 * 3 * 5


def test_conv2d_with_same_and_valid_padding_and_strides():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)  # 8x8x4
    x = layers.MaxPool2D(1)(x)  # 0
    a = layers.Conv2D(2, 3, strides=2, padding="valid")(x)  # 3x3x2
    b = layers.Conv2D(2, 3, strides=2, padding="same")(x)  # 4x4x2
    x = layers.Concatenate()([layers.Flatten()(a), layers.Flatten()(b)])  # 18 + 32
    model = keras.Model(inputs, layers.Dense(5)(x))
    same = 2 * 3 * 3 * 3 * 4 * 8 * 8  # 13,824
    valid = 2 * 3 * 3 * 4 * 2 * 3 * 3  # 1,296
    strided_same = 2 * 3 * 3 * 4 * 2 * 4 * 4  # 2,304
    dense = 2 * 50 * 5  # 500
    assert forward_flops(model) == same + valid + strided_same + dense == 17_924


def test_depthwise_separable_transposed_grouped_1d_and_channels_first():
    inputs = keras.Input((6, 6, 2))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inputs)  # 6x6x4
    x = layers.SeparableConv2D(3, 3)(x)  # 4x4x3
    x = layers.Conv2DTranspose(2, 3, strides=2, padding="same")(x)  # 8x8x2
    model = keras.Model(inputs, x)
    depthwise = 2 * 3 * 3 * 2 * 2 * 6 * 6  # 2,592
    separable = 2 * (3 * 3 * 4 + 4 * 3) * 4 * 4  # 1,536
    transposed = 2 * 3 * 3 * 3 * 2 * 4 * 4  # 1,728: per input pixel
    assert forward_flops(model) == depthwise + separable + transposed

    inputs = keras.Input((2, 2, 4))
    grouped = keras.Model(inputs, layers.Conv2D(4, 1, groups=2)(inputs))
    assert forward_flops(grouped) == 2 * (4 // 2) * 4 * 2 * 2  # 64

    inputs = keras.Input((5, 2))
    conv1d = keras.Model(inputs, layers.Conv1D(3, 2)(inputs))  # 4 positions
    assert forward_flops(conv1d) == 2 * 2 * 2 * 3 * 4

    inputs = keras.Input((3, 6, 6))
    first = keras.Model(inputs, layers.Conv2D(4, 3, data_format="channels_first")(inputs))
    assert forward_flops(first) == 2 * 3 * 3 * 3 * 4 * 4 * 4  # 4x4 output, not 4x4 of 6


def test_nested_models_and_shared_layers_count_every_call():
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3)], name="inner")  # 24
    deeper_in = keras.Input((3,))
    deeper = keras.Model(
        deeper_in, keras.Sequential([keras.Input((3,)), layers.Dense(6)])(deeper_in), name="deeper"
    )  # 36
    inputs = keras.Input((4,))
    shared = layers.Dense(4)  # 32/call
    x = layers.Add()([shared(inputs), shared(inputs)])
    x = deeper(inner(x))
    model = keras.Model(
        inputs, layers.TimeDistributed(layers.Dense(2))(layers.Reshape((3, 2))(x))
    )  # 3 * 8
    assert forward_flops(model) == 2 * 32 + 24 + 36 + 3 * 8


def test_the_cnn_factory_matches_its_architecture():
    from kerastrain.models import Head, ModelInputs, cnn

    inputs = keras.Input((28, 28, 1))
    model = cnn(ModelInputs(inputs, inputs), Head(10, "softmax"))
    conv = 2 * 9 * 1 * 32 * 28 * 28 + 2 * 9 * 32 * 64 * 14 * 14
    dense = 2 * (7 * 7 * 64) * 64 + 2 * 64 * 10
    assert forward_flops(model) == conv + dense


def test_subclassed_and_unmodelled_layers_are_said_so(caplog):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(keras.Input((3,)))
    with pytest.raises(ValueError, match="subclassed or not built"):
        forward_flops(net)

    inputs = keras.Input((5, 3))
    rnn = keras.Model(inputs, layers.Dense(2)(layers.LSTM(4)(inputs)))
    # A note for whoever reads the count (the user training cannot act on it): DEBUG.
    with caplog.at_level(logging.DEBUG, logger="kerastrain.training.flops"):
        assert forward_flops(rnn) == 2 * 4 * 2
    assert "LSTM" in caplog.text and "under-count" in caplog.text
    assert all(record.levelno == logging.DEBUG for record in caplog.records)

    inputs = keras.Input((None, 3))
    variable = keras.Model(inputs, layers.Conv1D(2, 1)(inputs))
    with pytest.raises(ValueError, match="static shapes"):
        forward_flops(variable)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_peak_is_measured_in_each_dtype(dtype):
    peak = matmul_peak_flops(dtype, size=256, repeats=2, min_seconds=0.02)
    assert peak > 1e6  # any real device multiplies 256x256 matrices faster than 1 MFLOP/s


def test_matmul_peak_refuses_an_unknown_dtype():
    with pytest.raises(ConfigError, match="'dtype'.*Did you mean 'bfloat16'"):
        matmul_peak_flops("bfloat61")
    with pytest.raises(ConfigError, match="'size'"):
        matmul_peak_flops(size=0)
