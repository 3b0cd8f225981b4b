"""The tf.data input pipeline.

In-memory arrays are fed by index: a dataset of (shuffled) row indices is
batched and each batch gathers its rows from the one tensor (or, for large
unaligned arrays, the one NumPy array) holding all the data. Splits therefore cost no copy of the data, the shuffle buffer holds
indices rather than examples, and the per-element overhead of a
``from_tensor_slices(x).shuffle().batch()`` chain is paid once per batch.
Evaluation datasets are gathered once and cached.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kerastrain._keras import tf

__all__ = ["make_dataset", "InMemory"]

AUTOTUNE = tf.data.AUTOTUNE


#: Arrays at least this large are never copied into a TensorFlow tensor: each
#: batch is gathered from the NumPy array instead. (`tf.convert_to_tensor` of a
#: 1 GB array raised the resident set by 2 GB here, and a DLPack-shared tensor
#: captured by the dataset's map function was copied twice.)
ZERO_COPY_BYTES = 64 * 2**20
#: Evaluation splits up to this size are cached once gathered.
CACHE_BYTES = 256 * 2**20


def _shared(array: np.ndarray) -> tuple[Any, bool]:
    """A tensor holding ``array`` when it is small, else the array itself
    (with ``False``): large arrays are gathered batch by batch in NumPy."""
    if array.nbytes < ZERO_COPY_BYTES:
        return tf.convert_to_tensor(array), True
    return array, False


class InMemory:
    """The whole data set, shared by every split's pipeline without copies.

    Small arrays become tensors; large ones are never copied whole, but
    gathered batch by batch in NumPy.

    Args:
        x: Float32 features.
        y: Labels.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, x_in_tf = _shared(x)
        self.y, y_in_tf = _shared(y)
        self.in_tensorflow = x_in_tf and y_in_tf
        self.num_rows = int(x.shape[0])
        self.row_bytes = int(x.nbytes // max(len(x), 1))
        self._specs = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                       tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)))

    def gather(self, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The rows ``idx`` of x and y."""
        if self.in_tensorflow:
            return tf.gather(self.x, idx), tf.gather(self.y, idx)
        x_spec, y_spec = self._specs

        def take(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.take(np.asarray(self.x), rows, axis=0), np.take(np.asarray(self.y), rows, axis=0)

        x, y = tf.numpy_function(take, [idx], (x_spec.dtype, y_spec.dtype), stateful=False)
        x.set_shape(x_spec.shape)
        y.set_shape(y_spec.shape)
        return x, y


def make_dataset(data: InMemory, indices: np.ndarray, batch_size: int, *, training: bool,
                 seed: int | None = None,
                 map_batch: Callable[[Any, Any], tuple[Any, Any]] | None = None) -> tf.data.Dataset:
    """A batched, prefetched dataset of the rows ``indices`` of ``data``.

    Args:
        data: The tensors to gather from.
        indices: The rows of this split.
        batch_size: Examples per batch (the global batch under a strategy).
        training: Shuffle every epoch (seeded) and do not cache; otherwise
            keep the order and cache the gathered batches.
        seed: The shuffle seed. Defaults to `None`.
        map_batch: A function of `(x, y)` batches applied after the gather
            (label encoding, augmentation). Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches.
    """
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if training:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(data.gather, num_parallel_calls=AUTOTUNE, deterministic=True)
    if map_batch is not None:
        ds = ds.map(map_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not training and len(indices) * data.row_bytes <= CACHE_BYTES:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)
