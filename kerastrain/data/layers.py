"""The few layers tf_keras lacks, used inside exported models: a table's
preprocessing, and the `transformer`'s embeddings, norm and pooling.

Each one is built from operations that SavedModel, TFLite's built-in kernels
and TF Serving all run (``x != x`` finds NaN, since TFLite has no ``IsNan``),
and is registered with tf_keras under the package ``kerastrain``: a ``.keras``
file that holds one reloads once `kerastrain.data.layers` is imported (a
SavedModel directory needs nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kerastrain._keras import keras, tf

__all__ = [
    "FillMissing",
    "MissingIndicator",
    "EncodeCategory",
    "TokenEmbedding",
    "PositionEmbedding",
    "LayerNorm",
    "PaddingMask",
    "AllPositions",
    "MaskedMeanPool",
    "LastTokenPool",
]

_register = keras.utils.register_keras_serializable(package="kerastrain")


def _stack(columns: Any) -> tf.Tensor:
    """``(batch, columns)`` float32 from a list of ``(batch,)`` columns (a
    reloaded model passes a one-column list as the tensor itself)."""
    if not isinstance(columns, (list, tuple)):
        columns = [columns] if columns.shape.rank == 1 else tf.unstack(columns, axis=-1)
    return tf.stack([tf.reshape(tf.cast(c, tf.float32), [-1]) for c in columns], axis=-1)


@_register
class FillMissing(keras.layers.Layer):
    """Stacks numeric columns and replaces NaN with each column's fill value.

    Args:
        fill: One value per column (learned on the training split).
    """

    def __init__(self, fill: Sequence[float], **kwargs: Any):
        super().__init__(**kwargs)
        self.fill = [float(v) for v in fill]

    def call(self, columns: Any) -> tf.Tensor:
        x = _stack(columns)
        return tf.where(tf.not_equal(x, x), tf.constant(self.fill, tf.float32), x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill": self.fill}


@_register
class MissingIndicator(keras.layers.Layer):
    """1.0 where a numeric column is missing (NaN), else 0.0, per column."""

    def call(self, columns: Any) -> tf.Tensor:
        x = _stack(columns)
        return tf.cast(tf.not_equal(x, x), tf.float32)


@_register
class EncodeCategory(keras.layers.Layer):
    """A category's index (0: out of vocabulary) or its one-hot row.

    Strings are looked up in a hash table (`StringLookup`); numbers are
    compared with the vocabulary. A missing value (`""` or NaN) takes the
    index of `fill`, the training split's most frequent category.

    Args:
        vocabulary: The training categories, most frequent first.
        fill: The category that replaces a missing value.
        one_hot: Return the one-hot row (width `len(vocabulary) + 1`)
            instead of the index. Defaults to `True`.
    """

    def __init__(self, vocabulary: Sequence[Any], fill: Any, one_hot: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.text = isinstance(vocabulary[0], str)
        self.vocabulary = [str(v) if self.text else float(v) for v in vocabulary]
        self.fill = str(fill) if self.text else float(fill)
        self.one_hot = one_hot
        self.fill_index = self.vocabulary.index(self.fill) + 1
        if self.text:
            self.lookup = keras.layers.StringLookup(
                vocabulary=self.vocabulary, num_oov_indices=1, output_mode="int"
            )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.reshape(x, [-1])
        if self.text:
            # The TFLite converter leaves the hash-table lookup's output
            # unranked (`tensor<*>`), and so the one-hot after it: at the
            # input's stored size (one row, no resize) the interpreter then
            # prepares the features' CONCATENATION with a rank-1 one-hot and
            # fails ("1 != 2"; XNNPACK: "failed to reshape runtime"), and
            # int8 calibration, which feeds one row at a time, fails too.
            # Reshaping to the keys' rank gives every later tensor its shape.
            index = tf.reshape(tf.cast(self.lookup(x), tf.int32), [-1])
            index = tf.where(tf.equal(x, ""), tf.constant(self.fill_index, tf.int32), index)
        else:
            x = tf.cast(x, tf.float32)
            x = tf.where(tf.not_equal(x, x), tf.constant(self.fill, tf.float32), x)
            match = tf.equal(tf.expand_dims(x, -1), tf.constant([self.vocabulary], tf.float32))
            found = tf.reduce_any(match, axis=-1)
            index = tf.where(
                found,
                tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=-1), tf.int32) + 1,
                tf.zeros_like(found, tf.int32),
            )
        if self.one_hot:
            return tf.one_hot(index, len(self.vocabulary) + 1, dtype=tf.float32)
        return index

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "fill": self.fill,
            "one_hot": self.one_hot,
        }


# --------------------------------------------------------------------------- the transformer's
# The layers of kerastrain's `transformer` (kerastrain.models.transformer)
# that tf_keras lacks. The normalization is computed with `tf.nn.moments`:
# tf_keras's `LayerNormalization` lowers to `FusedBatchNormV3`, which DTensor
# cannot lay out.


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
        # On a DTensor mesh (inputs padded to max_length) the table is used
        # whole and `expand_dims` adds the batch axis: there a slice of a
        # run-time length fails to lay out, and `[tf.newaxis]` (a strided
        # slice with a new axis) crashed the process.
        positions = self.positions
        if x.shape[1] != self.max_length:  # shorter, or known only at run time
            positions = positions[: tf.shape(x)[1] if x.shape[1] is None else x.shape[1]]
        return x + tf.expand_dims(tf.cast(positions, x.dtype), 0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length}


@_register
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis, computed with `tf.nn.moments`
    in float32 (whatever the mixed-precision policy).

    One path for every device and for a model-parallel mesh (DTensor has no
    layout propagation for the `FusedBatchNormV3` that tf_keras's
    `LayerNormalization` lowers to when its epsilon is at least 1.001e-5; at
    1e-6, as here and in the Keras tutorial's Transformer, tf_keras computes
    the same moments). It costs no speed: on the 2-core
    AVX-512 CPU the fused kernel took 2.7 ms of CPU time per forward and
    backward pass of a ``(32, 96, 64)`` batch against 2.2 ms for these
    operations (one thread, medians of 15 rounds; issue 22).
    """

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


@_register
class LastTokenPool(keras.layers.Layer):
    """The vector of the last position the mask keeps, per row, of
    ``(batch, length, d)`` vectors (a row with none gives zeros): what a
    causal model has read of the whole row (a `transfer` model's pooling on
    a language-model backbone, `model_options.pooling="last"`)."""

    def call(self, inputs: Any) -> tf.Tensor:
        x, mask = inputs
        keep = tf.reduce_any(mask, axis=1)  # (batch, length); no bool slicing for TFLite
        positions = tf.expand_dims(tf.range(tf.shape(x)[1]), 0)
        last = tf.reduce_max(tf.where(keep, positions, -tf.ones_like(positions)), axis=1)
        pick = tf.cast(tf.equal(positions, tf.expand_dims(last, 1)), x.dtype)
        return tf.reduce_sum(x * tf.expand_dims(pick, 2), axis=1)
