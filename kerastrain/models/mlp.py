"""A multi-layer perceptron for tabular (and flattened) inputs."""

from __future__ import annotations

from kerastrain._keras import keras
from kerastrain.data.preprocess import ModelInputs
from kerastrain.models.base import Head, make_initializer, output_layer, regularizer


def mlp(
    inputs: ModelInputs,
    head: Head,
    *,
    width: int = 128,
    depth: int = 2,
    dropout: float = 0.1,
    l1: float = 0.0,
    l2: float = 0.0,
    activation: str = "relu",
    initializer: str = "glorot_uniform",
    batch_norm: bool = False,
    residual: bool = False,
) -> keras.Model:
    """Dense layers of equal width, each followed by dropout.

    With `residual`, each hidden layer after the first adds its input to its
    output (``x + act(dense(x))``, dropout after the sum), so deep stacks
    train.

    Args:
        inputs: The model's inputs and preprocessed features.
        head: The output layer the task needs.
        width: Units per hidden layer. Defaults to `128`.
        depth: Number of hidden layers. Defaults to `2`.
        dropout: Dropout rate after each hidden layer. Defaults to `0.1`.
        l1: L1 penalty on the kernels. Defaults to `0.0`.
        l2: L2 penalty on the kernels. Defaults to `0.0`.
        activation: Hidden activation. Defaults to `"relu"`.
        initializer: Kernel initializer (`"glorot_uniform"`, `"he_normal"`,
            `"lecun_normal"`, ...). Defaults to `"glorot_uniform"`.
        batch_norm: Batch normalization before each activation.
            Defaults to `False`.
        residual: Residual connections around the hidden layers after the
            first. Defaults to `False`.

    Returns:
        An uncompiled functional `tf_keras.Model`.
    """
    x = inputs.features
    if len(inputs.feature_shape) > 1:
        x = keras.layers.Flatten(name="flatten")(x)
    reg = regularizer(l1, l2)
    for i in range(depth):
        block_input = x
        x = keras.layers.Dense(
            width,
            kernel_regularizer=reg,
            use_bias=not batch_norm,
            kernel_initializer=make_initializer(initializer),
            name=f"dense_{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        if residual and i > 0:
            x = keras.layers.Add(name=f"residual_{i}")([block_input, x])
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = output_layer(head, kernel_initializer=make_initializer(initializer))(x)
    return keras.Model(inputs.inputs, outputs, name="mlp")
