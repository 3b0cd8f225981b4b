"""The few preprocessing layers tf_keras lacks, used inside exported models.

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

__all__ = ["FillMissing", "MissingIndicator", "EncodeCategory"]

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
