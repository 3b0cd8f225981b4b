"""A small convolutional network for images of any size."""

from __future__ import annotations

import math

from kerastrain._keras import keras
from kerastrain.data.preprocess import ModelInputs
from kerastrain.models.base import Head, make_initializer, output_layer, regularizer

#: Flatten the last feature map when it has at most this many values, else
#: average it globally (a large image would make the dense layer huge).
MAX_FLATTEN = 4096


def cnn(
    inputs: ModelInputs,
    head: Head,
    *,
    filters: int = 32,
    depth: int = 2,
    kernel_size: int = 3,
    dense: int = 64,
    dropout: float = 0.25,
    l1: float = 0.0,
    l2: float = 0.0,
    activation: str = "relu",
    initializer: str = "he_uniform",
    batch_norm: bool = False,
) -> keras.Model:
    """Blocks of convolution and 2x2 max-pooling, then a dense layer.

    Filters double with each block. A block pools only while the feature map
    is at least 4 pixels on its short side, so 8x8 digits and 224x224 photos
    both work.

    Args:
        inputs: The model's inputs and preprocessed features, `(h, w, c)`.
        head: The output layer the task needs.
        filters: Filters of the first block. Defaults to `32`.
        depth: Number of convolution blocks. Defaults to `2`.
        kernel_size: Convolution kernel size. Defaults to `3`.
        dense: Units of the dense layer before the output. Defaults to `64`.
        dropout: Dropout before and after the dense layer. Defaults to `0.25`.
        l1: L1 penalty on the kernels. Defaults to `0.0`.
        l2: L2 penalty on the kernels. Defaults to `0.0`.
        activation: Hidden activation. Defaults to `"relu"`.
        initializer: Kernel initializer. Defaults to `"he_uniform"`.
        batch_norm: Batch normalization after each convolution.
            Defaults to `False`.

    Returns:
        An uncompiled functional `tf_keras.Model`.
    """
    x = inputs.features
    if len(inputs.feature_shape) == 2:  # (h, w) grayscale without a channel axis
        x = keras.layers.Reshape((*inputs.feature_shape, 1), name="add_channel")(x)
    reg = regularizer(l1, l2)
    for i in range(depth):
        x = keras.layers.Conv2D(
            filters * 2**i,
            kernel_size,
            padding="same",
            kernel_regularizer=reg,
            use_bias=not batch_norm,
            kernel_initializer=make_initializer(initializer),
            name=f"conv_{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPool2D(2, name=f"pool_{i}")(x)
    if math.prod(x.shape[1:]) <= MAX_FLATTEN:
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_features")(x)
    x = keras.layers.Dense(
        dense,
        activation=activation,
        kernel_regularizer=reg,
        kernel_initializer=make_initializer(initializer),
        name="dense",
    )(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_dense")(x)
    outputs = output_layer(head)(x)
    return keras.Model(inputs.inputs, outputs, name="cnn")
