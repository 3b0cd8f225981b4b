"""A small residual network for images (He et al., 2015), depth and width
configurable."""

from __future__ import annotations

from kerastrain._keras import keras
from kerastrain.data.preprocess import ModelInputs
from kerastrain.errors import config_error
from kerastrain.models.base import Head, make_initializer, output_layer, regularizer


def _block(
    x,
    filters: int,
    stride: int,
    name: str,
    kernel_size: int,
    reg,
    initializer: str,
    activation: str,
):
    conv = dict(padding="same", use_bias=False, kernel_regularizer=reg)
    y = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        name=f"{name}_conv1",
        kernel_initializer=make_initializer(initializer),
        **conv,
    )(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.Activation(activation, name=f"{name}_act1")(y)
    y = keras.layers.Conv2D(
        filters,
        kernel_size,
        name=f"{name}_conv2",
        kernel_initializer=make_initializer(initializer),
        **conv,
    )(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:  # projection shortcut
        shortcut = keras.layers.Conv2D(
            filters,
            1,
            strides=stride,
            name=f"{name}_proj",
            kernel_initializer=make_initializer(initializer),
            **conv,
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation(activation, name=f"{name}_out")(y)


def resnet(
    inputs: ModelInputs,
    head: Head,
    *,
    width: int = 16,
    depth: int = 3,
    blocks: int = 2,
    kernel_size: int = 3,
    dropout: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    activation: str = "relu",
    initializer: str = "he_normal",
) -> keras.Model:
    """A stem convolution, then `depth` stages of `blocks` residual blocks.

    Stage ``i`` has ``width * 2**i`` filters; each stage after the first
    halves the feature map (while it is at least 4 pixels on its short side),
    so 8x8 digits and 224x224 photos both work. Global average pooling feeds
    the output layer.

    Args:
        inputs: The model's inputs and preprocessed features, `(h, w, c)`.
        head: The output layer the task needs.
        width: Filters of the stem and the first stage. Defaults to `16`.
        depth: Number of stages. Defaults to `3`.
        blocks: Residual blocks per stage. Defaults to `2`.
        kernel_size: Convolution kernel size. Defaults to `3`.
        dropout: Dropout before the output layer. Defaults to `0.0`.
        l1: L1 penalty on the kernels. Defaults to `0.0`.
        l2: L2 penalty on the kernels. Defaults to `0.0`.
        activation: Hidden activation. Defaults to `"relu"`.
        initializer: Kernel initializer (`"he_normal"`, `"glorot_uniform"`,
            `"lecun_normal"`, ...). Defaults to `"he_normal"`.

    Returns:
        An uncompiled functional `tf_keras.Model`.

    Raises:
        ConfigError: For inputs that are not images or a non-positive size.
    """
    for name, value in (("width", width), ("depth", depth), ("blocks", blocks)):
        if value < 1:
            raise config_error(f"model_options.{name}", value, "at least 1")
    shape = inputs.feature_shape
    x = inputs.features
    if len(shape) == 2:
        x = keras.layers.Reshape((*shape, 1), name="add_channel")(x)
    elif len(shape) != 3:
        raise config_error(
            "model",
            "resnet",
            f"a factory for images; the examples have shape "
            f"{shape} (use 'mlp' for rows of features)",
        )
    reg = regularizer(l1, l2)
    x = keras.layers.Conv2D(
        width,
        kernel_size,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name="stem_conv",
        kernel_initializer=make_initializer(initializer),
    )(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation(activation, name="stem_act")(x)
    for stage in range(depth):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 and min(x.shape[1], x.shape[2]) >= 4 else 1
            x = _block(
                x,
                width * 2**stage,
                stride,
                f"stage{stage}_block{block}",
                kernel_size,
                reg,
                initializer,
                activation,
            )
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = output_layer(
        head, kernel_initializer=make_initializer(initializer), kernel_regularizer=reg
    )(x)
    return keras.Model(inputs.inputs, outputs, name="resnet")
