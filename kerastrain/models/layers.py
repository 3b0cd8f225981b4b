"""The layers of kerastrain's `transformer` that tf_keras lacks.

Each is registered with tf_keras under the package ``kerastrain`` (a `.keras`
file that holds one reloads once this module is imported, as
`kerastrain.evaluate` and `kerastrain predict` do) and built from operations
that SavedModel, `.keras` and TFLite's built-in kernels run. The
normalization is computed with `tf.nn.moments`: tf_keras's
`LayerNormalization` lowers to `FusedBatchNormV3`, which DTensor cannot lay
out.
"""

from __future__ import annotations

from typing import Any

from kerastrain._keras import keras, tf

__all__ = [
    "TokenEmbedding",
    "PositionEmbedding",
    "LayerNorm",
    "PaddingMask",
    "AllPositions",
    "MaskedMeanPool",
]

_register = keras.utils.register_keras_serializable(package="kerastrain")


@_register
class TokenEmbedding(keras.layers.Layer):
    """Token ids, truncated to ``max_length``, to vectors (id 0 pads).

    Args:
        vocabulary_size: Distinct ids.
        d_model: Width of each vector.
        max_length: Tokens kept per row (the first ones).
    """

    def __init__(self, vocabulary_size: int, d_model: int, max_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.d_model = int(d_model)
        self.max_length = int(max_length)

    def build(self, input_shape: Any) -> None:
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.d_model),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(ids[:, : self.max_length], tf.int32)
        return tf.gather(tf.cast(self.embeddings, self.compute_dtype), ids)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "d_model": self.d_model,
            "max_length": self.max_length,
        }


@_register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position to ``(batch, length, d)`` inputs
    of at most ``max_length`` positions."""

    def __init__(self, max_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = int(max_length)

    def build(self, input_shape: Any) -> None:
        self.positions = self.add_weight(
            name="positions",
            shape=(self.max_length, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        length = tf.shape(x)[1]
        return x + tf.cast(self.positions[:length], x.dtype)[tf.newaxis]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length}


@_register
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis, computed with `tf.nn.moments`
    in float32 (whatever the mixed-precision policy)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape: Any) -> None:
        width = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(width,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(width,), initializer="zeros")
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x32 = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        normed = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon)
        out = normed * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32)
        return tf.cast(out, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@_register
class PaddingMask(keras.layers.Layer):
    """``(batch, 1, length)`` True where a (truncated) token id is not padding:
    the attention mask of every query."""

    def __init__(self, max_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = int(max_length)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        # expand_dims, not [:, tf.newaxis]: TFLite's strided slice takes no bool new axis.
        return tf.expand_dims(tf.not_equal(ids[:, : self.max_length], 0), 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length}


@_register
class AllPositions(keras.layers.Layer):
    """``(batch, 1, length)`` all True: every step of a numeric sequence is
    attended to and pooled."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.ones([tf.shape(x)[0], 1, tf.shape(x)[1]], tf.bool)


@_register
class MaskedMeanPool(keras.layers.Layer):
    """The mean of ``(batch, length, d)`` vectors over the positions the mask
    keeps (a row with none gives zeros)."""

    def call(self, inputs: Any) -> tf.Tensor:
        x, mask = inputs
        keep = tf.cast(tf.transpose(mask, [0, 2, 1]), x.dtype)  # (batch, length, 1)
        total = tf.reduce_sum(x * keep, axis=1)
        count = tf.maximum(tf.reduce_sum(keep, axis=1), tf.ones([], x.dtype))
        return total / count
