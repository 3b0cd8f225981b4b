"""The tf.data input pipeline.

In-memory arrays are fed by index: a dataset of (shuffled) row indices is
batched and each batch gathers its rows from the one tensor holding all the
data. Splits therefore cost no copy of the data, the shuffle buffer holds
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


class InMemory:
    """The whole data set as two tensors, shared by every split's pipeline.

    Args:
        x: Float32 features.
        y: Labels.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = tf.convert_to_tensor(x)
        self.y = tf.convert_to_tensor(y)
        self.num_rows = int(x.shape[0])


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
    x, y = data.x, data.y

    def gather(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(x, idx), tf.gather(y, idx)

    ds = ds.batch(batch_size).map(gather, num_parallel_calls=AUTOTUNE, deterministic=True)
    if map_batch is not None:
        ds = ds.map(map_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not training:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)
