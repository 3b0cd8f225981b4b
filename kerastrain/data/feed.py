"""The tf.data input pipeline.

In-memory arrays are fed by index: a dataset of (shuffled) row indices is
batched and each batch gathers its rows from the one tensor holding all the
data. Splits therefore cost no copy of the data, the shuffle buffer holds
indices rather than examples, and the per-element overhead of a
``from_tensor_slices(x).shuffle().batch()`` chain is paid once per batch.
Evaluation datasets are gathered once and cached.

A NumPy array of at least `ZERO_COPY_BYTES` is not converted to a tensor
(``tf.convert_to_tensor`` copies it, and briefly needs twice its size):
each batch's rows are gathered from the array itself by NumPy through
``tf.numpy_function``, so large inputs cost no second copy (the rows of a
batch excepted). Such a pipeline runs in the Python process that holds the
array, which every strategy but ParameterServerStrategy does.

A table is a dict of column tensors gathered the same way (one gather per
column per batch). uint8 images are kept as bytes and cast to float32 per
batch. A `Stream` (file-based data too large for memory) is read from its
files every epoch instead; its evaluation splits are cached when they fit in
``data_options.in_memory_mb``. In-memory data is sharded by DATA under a
multi-worker strategy; streams by AUTO (FILE when the source is files that
tf.data reads, as TFDS records are, else DATA).

Training batches are then augmented (`kerastrain.data.augment`), with a seed
per batch drawn from the run's seed.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kerastrain._keras import tf
from kerastrain.data.stream import Stream

__all__ = ["make_dataset", "InMemory", "training_datasets"]

AUTOTUNE = tf.data.AUTOTUNE
#: Arrays at least this large are gathered in place by NumPy, never copied.
ZERO_COPY_BYTES = 64 * 2**20


def _tensor(array: Any) -> tf.Tensor:
    if isinstance(array, np.ndarray) and array.dtype == object:
        return tf.convert_to_tensor(array.astype(str), tf.string)
    return tf.convert_to_tensor(array)


class InMemory:
    """The whole data set as tensors, shared by every split's pipeline.

    Args:
        x: Features: float32 or uint8 array (kept as is, not copied, when
            it has at least `ZERO_COPY_BYTES`), a dict of column arrays, or a
            `Stream` (kept as is: read from its files).
        y: Labels.
        cache_bytes: A stream's evaluation split is cached when its decoded
            size is at most this. Defaults to 1 GiB.
    """

    def __init__(self, x: Any, y: np.ndarray, cache_bytes: float = 2**30):
        if isinstance(x, Stream) or (isinstance(x, np.ndarray) and x.nbytes >= ZERO_COPY_BYTES):
            self.x = x
        elif isinstance(x, dict):
            self.x = {k: _tensor(v) for k, v in x.items()}
        else:
            self.x = tf.convert_to_tensor(x)
        self.y = tf.convert_to_tensor(y)
        self.num_rows = int(y.shape[0])
        self.cache_bytes = cache_bytes


def _to_float(t: tf.Tensor) -> tf.Tensor:
    return tf.cast(t, tf.float32) if t.dtype == tf.uint8 else t


def make_dataset(data: InMemory, indices: np.ndarray, batch_size: int, *, training: bool,
                 seed: int | None = None,
                 map_batch: Callable[[Any, Any], tuple[Any, Any]] | None = None,
                 augment: Callable[[Any, Any, Any], tuple[Any, Any]] | None = None
                 ) -> tf.data.Dataset:
    """A batched, prefetched dataset of the rows ``indices`` of ``data``.

    Args:
        data: The tensors to gather from.
        indices: The rows of this split.
        batch_size: Examples per batch (the global batch under a strategy).
        training: Shuffle every epoch (seeded) and do not cache; otherwise
            keep the order and cache the gathered batches.
        seed: The shuffle seed. Defaults to `None`.
        map_batch: A function of `(x, y)` batches applied after the gather
            (label encoding). Defaults to `None`.
        augment: `augment(x, y, seed)` applied to each batch after
            `map_batch`, with a `[2]` seed drawn per batch from `seed`
            (training only). Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches.
    """
    x, y = data.x, data.y
    policy = tf.data.experimental.AutoShardPolicy.DATA
    if isinstance(x, Stream):
        ds = x.examples(np.asarray(indices, np.int64), shuffle=training, seed=seed)
        ds = ds.map(lambda i, features: (_to_float(features), tf.gather(y, i)),
                    num_parallel_calls=AUTOTUNE, deterministic=not training).batch(batch_size)
        policy = tf.data.experimental.AutoShardPolicy.AUTO
        cache = x.nbytes(len(indices)) <= data.cache_bytes
    else:
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
        if training:
            ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)

        if isinstance(x, np.ndarray):
            array, spec = x, tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype))

            def gather(idx: tf.Tensor) -> tuple[Any, tf.Tensor]:
                rows = tf.numpy_function(lambda i: array[i], [idx], spec.dtype, stateful=False)
                return _to_float(tf.ensure_shape(rows, spec.shape)), tf.gather(y, idx)
        else:
            def gather(idx: tf.Tensor) -> tuple[Any, tf.Tensor]:
                return (tf.nest.map_structure(lambda t: _to_float(tf.gather(t, idx)), x),
                        tf.gather(y, idx))

        ds = ds.batch(batch_size).map(gather, num_parallel_calls=AUTOTUNE, deterministic=True)
        cache = True
    if map_batch is not None:
        ds = ds.map(map_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training and augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: augment(batch[0], batch[1], s), num_parallel_calls=AUTOTUNE,
            deterministic=True)
    if not training and cache:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options).prefetch(AUTOTUNE)


def training_datasets(prepared: Any, batch_size: int, *, seed: int | None,
                      one_hot_depth: int | None = None, memory: InMemory | None = None
                      ) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The training and validation datasets of a `Prepared`.

    Args:
        prepared: The prepared data (its splits, augmentations, encodings).
        batch_size: The global batch size.
        seed: Seed of the shuffle and the augmentations.
        one_hot_depth: One-hot encode the labels to this many classes
            (label smoothing, mixup, cutmix). Defaults to `None`.
        memory: The data as tensors, to share between runs. Defaults to
            `None` (made here).

    Returns:
        The training dataset (shuffled, augmented) and the validation one
        (or None when there is no validation split).
    """
    from kerastrain.data.augment import batch_augmenter

    if memory is None:
        memory = InMemory(prepared.x, prepared.y,
                          cache_bytes=prepared.options.in_memory_mb * 2**20)
    map_batch = None
    if one_hot_depth:
        map_batch = lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), one_hot_depth))  # noqa: E731
    scale = None
    if prepared.encoding is not None:
        scale = prepared.encoding.numeric_std()
    elif prepared.standardizer is not None:
        scale = np.sqrt(prepared.standardizer.variance)
    elif any(a["name"] == "noise" for a in prepared.augment):
        from kerastrain.data.preprocess import fit_standardizer

        scale = np.sqrt(fit_standardizer(prepared.x, prepared.splits.train).variance)
    augment = batch_augmenter(prepared.augment, prepared.x, seed=seed or 0,
                              example_shape=prepared.feature_shape, scale=scale)
    train_ds = make_dataset(memory, prepared.splits.train, batch_size, training=True, seed=seed,
                            map_batch=map_batch, augment=augment)
    val_ds = None
    if len(prepared.splits.val):
        val_ds = make_dataset(memory, prepared.splits.val, batch_size, training=False,
                              map_batch=map_batch)
    return train_ds, val_ds
