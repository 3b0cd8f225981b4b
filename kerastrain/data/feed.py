"""The tf.data input pipeline.

In-memory arrays are fed by index. Each epoch, the split's row indices are
shuffled in one operation (seeded, a new order every epoch); data held in
TensorFlow is then gathered for the whole epoch at once and cut into batches
by one reshape, so tf.data handles one element per batch instead of one per
row (a ``from_tensor_slices(x).shuffle().batch()`` chain pays its overhead
per row, and its shuffle buffer holds a second copy of the examples). Large
NumPy arrays are never copied whole: each batch of indices gathers its rows
in NumPy. Evaluation datasets are gathered once and cached when they are
small.

A table is a dict of column arrays gathered the same way (one gather per
column). uint8 images are kept as bytes and cast to float32 per
batch. A `Stream` (file-based data too large for memory) is read from its
files every epoch instead. In-memory data is sharded by DATA under a
multi-worker strategy; streams by AUTO (FILE when the source is files that
tf.data reads, as TFDS records are, else DATA).

Training batches are then augmented (`kerastrain.data.augment`), with a seed
per batch drawn from the run's seed.

Under parameter-server training each worker builds the datasets itself:
`coordinator_datasets` wraps them in the dataset functions `model.fit` takes
there, as TensorFlow documents it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.data.balance import class_weights, resample_rows, resampled_size
from kerastrain.data.stream import Stream
from kerastrain.errors import ConfigError

__all__ = [
    "make_dataset",
    "epoch_seeds",
    "InMemory",
    "training_datasets",
    "coordinator_datasets",
    "with_sample_weights",
]

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
    (with ``False``): large arrays are gathered batch by batch in NumPy.
    Text (object arrays, a table's categories) becomes a string tensor."""
    if array.dtype == object:
        return tf.convert_to_tensor(array.astype(str), tf.string), True
    if array.nbytes < ZERO_COPY_BYTES:
        return tf.convert_to_tensor(array), True
    return array, False


def _compact_targets(y: np.ndarray) -> np.ndarray:
    """Labels that are whole numbers (classes; binary labels are float32
    0/1) in the smallest integer type of their range, else as they are; the
    feed casts each batch back (`InMemory.y_dtype`)."""
    if not len(y) or y.dtype.kind not in "iuf":
        return y
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return y
    low, high = y.min(), y.max()
    for dtype in (np.int8, np.int16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return y.astype(dtype)
    return y


def _take(source: Any, idx: tf.Tensor) -> tf.Tensor:
    """Rows ``idx`` of a tensor, or of a large NumPy array (in NumPy); uint8
    pixels come out as float32."""
    if isinstance(source, np.ndarray):
        rows = tf.numpy_function(
            lambda i: np.take(source, i, axis=0), [idx], tf.as_dtype(source.dtype), stateful=False
        )
        rows.set_shape((None, *source.shape[1:]))
    else:
        rows = tf.gather(source, idx)
    return _as_float(rows)


def _as_float(rows: tf.Tensor) -> tf.Tensor:
    return tf.cast(rows, tf.float32) if rows.dtype == tf.uint8 else rows


def _in_batches(tensors: Any, rows: int, batch_size: int) -> tf.data.Dataset:
    """Consecutive batches of the ``rows`` rows of ``tensors`` (a nest of
    tensors), the last one smaller when the rows do not divide: one reshape,
    so that tf.data handles each batch, not each row."""
    full = rows // batch_size

    def whole(t: tf.Tensor) -> tf.Tensor:
        return tf.reshape(t[: full * batch_size], [full, batch_size, *t.shape[1:]])

    batches = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(whole, tensors))
    if rows > full * batch_size:
        batches = batches.concatenate(
            tf.data.Dataset.from_tensors(
                tf.nest.map_structure(lambda t: t[full * batch_size :], tensors)
            )
        )
    return batches


class InMemory:
    """The whole data set, shared by every split's pipeline without copies.

    Small arrays become tensors; large ones are never copied whole, but
    gathered batch by batch in NumPy.

    Args:
        x: Features: a float32 or uint8 array, a dict of column arrays (a
            table), or a `Stream` (kept as is: read from its files).
        y: Labels (the training targets). For a table streamed from its
            files they are held in the smallest integer type when they are
            whole numbers, and each batch is cast back to their dtype
            (`y_dtype`).
        cache_bytes: Evaluation splits up to this size are cached (never a
            table stream's: it is read from its files again).
            Defaults to `CACHE_BYTES`.
    """

    def __init__(self, x: Any, y: np.ndarray, cache_bytes: float = CACHE_BYTES):
        self.stream = x if isinstance(x, Stream) else None
        self.y_dtype = None
        if getattr(self.stream, "batched", False):
            self.y_dtype = tf.as_dtype(y.dtype)
            # A table streamed from its files: its labels are the one array of
            # the table's length here, held in the fewest bytes that keep them.
            y = _compact_targets(y)
        if self.stream is not None:
            self.x, x_in_tf = x, True
            self.row_bytes = x.decoded_bytes(1)
        elif isinstance(x, dict):
            columns = {k: _shared(v) for k, v in x.items()}
            self.x = {k: v for k, (v, _) in columns.items()}
            x_in_tf = all(in_tf for _, in_tf in columns.values())
            self.row_bytes = sum(int(v.nbytes // max(len(v), 1)) for v in x.values())
        else:
            self.x, x_in_tf = _shared(x)
            self.row_bytes = int(x.nbytes // max(len(x), 1))
        self.y, y_in_tf = _shared(y)
        self.in_tensorflow = x_in_tf and y_in_tf
        self.num_rows = int(y.shape[0])
        self.cache_bytes = cache_bytes

    def gather(self, idx: tf.Tensor) -> tuple[Any, tf.Tensor]:
        """The rows ``idx`` of x (float32 for pixels) and y."""
        x = (
            {k: _take(v, idx) for k, v in self.x.items()}
            if isinstance(self.x, dict)
            else _take(self.x, idx)
        )
        return x, _take(self.y, idx)

    def batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int | None,
        epoch_seeds: Sequence[int] | None = None,
    ) -> tf.data.Dataset:
        """Batches of the rows ``indices``, reshuffled every epoch when asked.

        Data held in TensorFlow is gathered an epoch at a time (one gather,
        then batches are slices of it: tf.data sees one element per batch);
        large NumPy arrays are gathered batch by batch, never whole. With
        ``epoch_seeds``, one pass holds one epoch per seed (see
        `make_dataset`).
        """
        rows = len(indices)
        idx = tf.constant(indices, tf.int64)

        def epoch(order: tf.Tensor) -> tf.data.Dataset:
            if not self.in_tensorflow:
                return _in_batches(order, rows, batch_size).map(
                    self.gather, num_parallel_calls=AUTOTUNE, deterministic=True
                )
            ds = _in_batches(
                tf.nest.map_structure(lambda t: tf.gather(t, order), (self.x, self.y)),
                rows,
                batch_size,
            )
            if any(t.dtype == tf.uint8 for t in tf.nest.flatten(self.x)):
                # Pixels stay bytes until batched: a float32 copy is 4x larger.
                ds = ds.map(lambda x, y: (tf.nest.map_structure(_as_float, x), y))
            return ds

        if shuffle:
            # A seed per epoch (a fresh draw at each new iterator, as
            # `reshuffle_each_iteration` does), and one shuffle of the indices.
            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            if epoch_seeds is not None:
                draws = tf.data.Dataset.from_tensor_slices(tf.constant(epoch_seeds, tf.int64))
            ds = draws.flat_map(
                lambda s: epoch(
                    tf.random.experimental.stateless_shuffle(
                        idx, seed=tf.stack([s, tf.constant(seed or 0, tf.int64)])
                    )
                )
            )
        else:
            ds = epoch(idx)
        epochs = 1 if epoch_seeds is None or not shuffle else len(epoch_seeds)
        return ds.apply(tf.data.experimental.assert_cardinality(epochs * -(-rows // batch_size)))


def epoch_seeds(seed: int | None, epochs: int) -> list[int]:
    """The shuffle seeds of a single-device `fit`'s first ``epochs`` epochs.

    `make_dataset` draws an epoch's seed at each new iterator; tf_keras's
    `fit` over a finite dataset opens one it never reads, then one per
    epoch, so epoch `e` gets the draw `e + 1`. Drawn here from a twin of
    that random source, for `make_dataset(..., epoch_seeds=...)`.
    """
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return [int(next(iter(draws))) for _ in range(epochs + 1)][1:]


def make_dataset(
    data: InMemory,
    indices: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int | None = None,
    map_batch: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    augment: Callable[[Any, Any, Any], tuple[Any, Any]] | None = None,
    epoch_seeds: Sequence[int] | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of the rows ``indices`` of ``data``.

    Args:
        data: The data to gather from.
        indices: The rows of this split.
        batch_size: Examples per batch (the global batch under a strategy).
        training: Shuffle every epoch (seeded) and do not cache; otherwise
            keep the order and cache the gathered batches when they are
            small.
        seed: The shuffle seed. Defaults to `None`.
        map_batch: A function of `(x, y)` batches applied after the gather
            (label encoding). Defaults to `None`.
        augment: `augment(x, y, seed)` applied to each batch after
            `map_batch`, with a `[2]` seed drawn per batch from `seed`
            (training only). Defaults to `None`.
        epoch_seeds: For in-memory data in training: one pass holds one
            epoch per seed, each shuffled by its seed (`epoch_seeds(seed, n)`
            gives the ones a single-device `fit` draws), and the augmentation
            seeds are one fixed stream, so that every iterator over the
            dataset yields the same batches (a DTensor mesh opens one per
            device). Defaults to `None`: one epoch, reshuffled at each new
            iterator.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches.
    """
    policy = tf.data.experimental.AutoShardPolicy.DATA
    table_stream = data.stream is not None and getattr(data.stream, "batched", False)
    # A table stream's split indices stay as they are (int32): no int64 copy.
    indices = np.asarray(indices) if table_stream else np.asarray(indices, dtype=np.int64)
    if table_stream:
        # A table read from its files: parsed, filtered and batched by the
        # stream itself; the labels are gathered by row index.
        y, y_dtype = data.y, data.y_dtype
        ds = data.stream.batches(indices, batch_size, shuffle=training, seed=seed)
        ds = ds.map(
            lambda i, x: (x, tf.cast(_take(y, i), y_dtype)),
            num_parallel_calls=AUTOTUNE,
            deterministic=not training,
        )
        policy = getattr(tf.data.experimental.AutoShardPolicy, data.stream.shard_policy())
    elif data.stream is not None:
        y = data.y
        ds = data.stream.examples(indices, shuffle=training, seed=seed)
        ds = ds.map(
            lambda i, x: (tf.cast(x, tf.float32) if x.dtype == tf.uint8 else x, _take(y, i)),
            num_parallel_calls=AUTOTUNE,
            deterministic=not training,
        ).batch(batch_size)
        policy = tf.data.experimental.AutoShardPolicy.AUTO
    else:
        ds = data.batches(indices, batch_size, shuffle=training, seed=seed, epoch_seeds=epoch_seeds)
    if map_batch is not None:
        ds = ds.map(map_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training and augment is not None:
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=epoch_seeds is None
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: augment(batch[0], batch[1], s),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    # A table stream is read from its files again rather than cached: a
    # cached held-out split would hold its rows in memory, which is what
    # streaming is for not doing.
    if not training and not table_stream and len(indices) * data.row_bytes <= data.cache_bytes:
        ds = ds.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options).prefetch(AUTOTUNE)


def with_sample_weights(ds: tf.data.Dataset, weights: np.ndarray, binary: bool) -> tf.data.Dataset:
    """``(x, y)`` batches as ``(x, y, sample_weight)``, each row weighing its
    class's weight: looked up for class indices, the labels' mix of weights
    for one-hot or mixed labels (smoothing, mixup), ``w0 (1 - y) + w1 y``
    for binary labels (mixed ones too).

    Args:
        ds: Batches of `(x, y)`.
        weights: One weight per class.
        binary: The labels are the positive class's probability.

    Returns:
        Batches of `(x, y, sample_weight)`.
    """
    table = tf.constant(weights, tf.float32)

    def add(x: Any, y: tf.Tensor) -> tuple[Any, tf.Tensor, tf.Tensor]:
        labels = tf.cast(y, tf.float32)
        if binary:
            p = tf.reshape(labels, [-1])
            w = table[0] * (1.0 - p) + table[1] * p
        elif y.shape.rank == 2 and y.shape[-1] == len(weights):
            w = tf.reduce_sum(labels * table, axis=-1)
        else:
            w = tf.gather(table, tf.reshape(tf.cast(y, tf.int32), [-1]))
        return x, y, w

    return ds.map(add, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def training_datasets(
    prepared: Any,
    batch_size: int,
    *,
    seed: int | None,
    one_hot_depth: int | None = None,
    memory: InMemory | None = None,
    class_weight: Any = None,
    magnitude: tf.Variable | None = None,
    epoch_seeds: Sequence[int] | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The training and validation datasets of a `Prepared`.

    With `prepared.options.resample`, the training rows are rebalanced
    (`kerastrain.data.balance.resample_rows`, drawn with `seed`); with
    `class_weight`, training batches carry sample weights
    (`with_sample_weights`). Validation batches get neither.

    Args:
        prepared: The prepared data (its splits, augmentations, encodings).
        batch_size: The global batch size.
        seed: Seed of the shuffle and the augmentations.
        one_hot_depth: One-hot encode the labels to this many classes
            (label smoothing, mixup, cutmix). Defaults to `None`.
        memory: The data, to share between runs. Defaults to `None` (made
            here from the features and the training targets).
        class_weight: `train.class_weight`: `None`, `"balanced"` (counted on
            the rows trained on) or a mapping label -> weight.
            Defaults to `None`.
        magnitude: The adaptive policy's magnitude variable
            (`data.adaptive.magnitude_variable`), read on every batch.
            Defaults to `None`: a fixed one at the policy's `initial`.
        epoch_seeds: The training batches as one pass over these epochs
            (`make_dataset`). Defaults to `None`.

    Returns:
        The training dataset (shuffled, augmented) and the validation one
        (or None when there is no validation split).
    """
    from kerastrain.data.adaptive import adaptive_augmenter, magnitude_variable
    from kerastrain.data.augment import batch_augmenter

    if memory is None:
        memory = InMemory(prepared.x, prepared.training_targets)
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
    policy = getattr(prepared, "augment_policy", None)
    if policy is not None:
        augment = adaptive_augmenter(
            prepared.augment,
            prepared.x,
            example_shape=prepared.feature_shape,
            magnitude=magnitude if magnitude is not None else magnitude_variable(policy["initial"]),
            scale=scale,
        )
    else:
        augment = batch_augmenter(
            prepared.augment,
            prepared.x,
            seed=seed or 0,
            example_shape=prepared.feature_shape,
            scale=scale,
        )
    rows = resample_rows(
        prepared.y, prepared.splits.train, getattr(prepared.options, "resample", None), seed
    )
    train_ds = make_dataset(
        memory,
        rows,
        batch_size,
        training=True,
        seed=seed,
        map_batch=map_batch,
        augment=augment,
        epoch_seeds=epoch_seeds,
    )
    weights = (
        None
        if class_weight is None
        else class_weights(class_weight, prepared.y[rows], prepared.task)
    )
    if weights is not None:
        train_ds = with_sample_weights(train_ds, weights, prepared.task.kind == "binary")
    val_ds = None
    if len(prepared.splits.val):
        val_ds = make_dataset(
            memory, prepared.splits.val, batch_size, training=False, map_batch=map_batch
        )
    return train_ds, val_ds


def coordinator_datasets(
    build: Callable[[], tuple[tf.data.Dataset, tf.data.Dataset | None]],
    prepared: Any,
    global_batch: int,
) -> tuple[Any, Any, dict[str, int]]:
    """Dataset functions for `model.fit` under parameter-server training.

    Each worker runs ``build`` itself: the coordinator sends the function,
    with in-memory data as constants inside it, and the datasets repeat (an
    epoch is a number of steps).

    Args:
        build: Makes the training and validation datasets (global batches).
        prepared: The data (its splits count the steps of an epoch).
        global_batch: Examples per step.

    Returns:
        The training and validation `DatasetCreator`s (the latter None
        without a validation split), and the `fit` arguments
        `steps_per_epoch` and `validation_steps`.

    Raises:
        ConfigError: When the arrays are too large to travel inside the
            dataset function (the feed gathers them in NumPy, which a remote
            worker cannot reach).
    """
    columns = prepared.x.values() if isinstance(prepared.x, dict) else [prepared.x]
    largest = max(getattr(c, "nbytes", 0) for c in columns)  # a table: its largest column
    if largest >= ZERO_COPY_BYTES:
        raise ConfigError(
            f"Parameter-server training sends in-memory data to every worker inside the dataset "
            f"function, and {largest / 2**20:,.0f} MiB is over the "
            f"{ZERO_COPY_BYTES / 2**20:,.0f} MiB that can travel that way. Use "
            "strategy='multi_worker' for this data."
        )
    splits = prepared.splits
    creator = keras.utils.experimental.DatasetCreator

    def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return build()[0].repeat()

    def val_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return build()[1].repeat()

    train_rows = resampled_size(
        prepared.y, splits.train, getattr(prepared.options, "resample", None)
    )
    steps = {"steps_per_epoch": max(1, math.ceil(train_rows / global_batch))}
    val = None
    if len(splits.val):
        val = creator(val_fn)
        steps["validation_steps"] = max(1, math.ceil(len(splits.val) / global_batch))
    return creator(train_fn), val, steps
