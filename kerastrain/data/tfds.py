"""``data="tfds:NAME"``: a TensorFlow Datasets data set as supervised pairs.

The data set is prepared in ``data_options.tfds_data_dir`` (downloaded when it
is not there and ``tfds_download`` is on), then read in TFDS's fixed file
order (``shuffle_files=False``), so a row index always names the same
example. Labels are read first (images are not decoded for that pass);
the features are then decoded into memory when they fit in
``data_options.in_memory_mb``, else streamed (`TfdsStream`: every epoch reads
the files, keeps the split's rows, decodes them in parallel and shuffles them
in a buffer).

When the data set is missing and cannot be downloaded, the error names the
data set, the folder, and how to prepare it on a connected machine.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.stream import Stream
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = ["PREFIX", "TfdsData", "TfdsStream", "read_tfds", "offline_instructions"]

PREFIX = "tfds:"
#: Shuffle buffer of a streamed split (examples).
STREAM_SHUFFLE_BUFFER = 10_000
SPLIT_ORDER = ("train", "val", "test")


class TfdsData:
    """What `read_tfds` read.

    Attributes:
        x: The features, or a `TfdsStream`.
        y: The labels.
        class_names: From a `ClassLabel`, else None.
        parts: Row indices of each kerastrain split given by
            `tfds_split` as a mapping, else None.
        description: For the report.
    """

    def __init__(
        self,
        x: Any,
        y: np.ndarray,
        class_names: list[str] | None,
        parts: dict[str, np.ndarray] | None,
        description: str,
    ):
        self.x, self.y, self.class_names = x, y, class_names
        self.parts, self.description = parts, description


def offline_instructions(name: str, data_dir: str) -> str:
    """How to prepare a TFDS data set for a machine without network."""
    return (
        f"To prepare it offline, run on a machine with network access:\n"
        f"  tfds build {name} --data_dir=/tmp/tfds\n"
        f'(or python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir='/tmp/tfds').download_and_prepare()\")\n"
        f"then copy /tmp/tfds/{name.split('/')[0]} into {data_dir} on this machine and "
        "rerun. For data sets whose files must be downloaded by hand, put them in "
        f"{data_dir}/downloads/manual first."
    )


def _builder(name: str, data_dir: str | None) -> Any:
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        raise DataError(
            message(
                f"TensorFlow Datasets has no data set named {name!r}",
                received={"data": f"tfds:{name}"},
                allowed="See https://www.tensorflow.org/datasets/catalog for the names, or "
                "register your own tfds.core.GeneratorBasedBuilder",
                candidates=known,
                near=name,
            )
        ) from None


def _as_dataset(builder: Any, split: str, options: DataConfig, **kwargs: Any) -> Any:
    name, data_dir = builder.name, str(builder.data_dir_root)
    try:
        return builder.as_dataset(split=split, shuffle_files=False, **kwargs)
    except AssertionError as exc:  # TFDS's "could not find data in ..."
        raise DataError(
            message(
                f"The TFDS data set {name!r} is not prepared in {data_dir} ({exc})",
                received={"data_options.tfds_download": options.tfds_download},
                allowed=offline_instructions(name, data_dir),
            )
        ) from None
    except (ValueError, KeyError) as exc:
        raise DataError(
            message(
                f"The TFDS data set {name!r} cannot read split {split!r}: {exc}",
                received={"data_options.tfds_split": options.tfds_split},
                allowed=f"Its splits are {', '.join(builder.info.splits) or 'unknown'}",
                candidates=list(builder.info.splits),
                near=split,
            )
        ) from None


def _prepare(builder: Any, options: DataConfig) -> None:
    if not options.tfds_download:
        return
    name, data_dir = builder.name, str(builder.data_dir_root)
    try:
        builder.download_and_prepare()
    except Exception as exc:  # network, disk, a missing module: all end the same way
        raise DataError(
            message(
                f"Preparing the TFDS data set {name!r} in {data_dir} failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                allowed=offline_instructions(name, data_dir),
            )
        ) from exc


def _pieces(options: DataConfig) -> list[tuple[str | None, str]]:
    spec = options.tfds_split
    if isinstance(spec, str):
        return [(None, spec)]
    return [(part, spec[part]) for part in SPLIT_ORDER if part in spec]


def _feature_info(builder: Any, key: str, options: DataConfig) -> tuple[tuple[int, ...], Any, bool]:
    import tensorflow_datasets as tfds

    feature = builder.info.features[key]
    is_image = isinstance(feature, tfds.features.Image)
    shape = tuple(feature.shape)
    dtype = np.dtype(feature.np_dtype)
    if dtype.kind not in "fiub":
        raise DataError(
            message(
                f"The TFDS data set {builder.name!r} has {dtype} features ({key!r})",
                allowed="kerastrain reads numeric tensors and images",
            )
        )
    if is_image and options.image_size:
        shape = (*options.image_size, shape[-1])
    return shape, dtype, is_image


def _resizer(shape: tuple[int, ...], is_image: bool, fixed: bool):
    from kerastrain._keras import tf

    if not is_image or fixed:
        return lambda x: x

    def resize(image: Any) -> Any:
        image = tf.image.resize(image, shape[:2])
        return tf.ensure_shape(tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8), shape)

    return resize


def _records(builder: Any, pieces: list[str], options: DataConfig, decoders: Any) -> Any:
    """Every example of the splits ``pieces``, in order, numbered from 0."""
    ds, start = None, 0
    for split in pieces:
        part = _as_dataset(builder, split, options, decoders=decoders)
        count = int(part.cardinality())
        if count < 0:
            count = sum(1 for _ in part.map(lambda ex: 0).batch(4096))
        part = part.enumerate(start=start)
        ds = part if ds is None else ds.concatenate(part)
        start += count
    return ds


class TfdsStream(Stream):
    """TFDS splits read from their files every epoch."""

    def __init__(
        self,
        builder: Any,
        pieces: list[str],
        x_key: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        is_image: bool,
        resize: Any,
        num_rows: int,
        options: DataConfig,
    ):
        self.builder, self.pieces, self.x_key = builder, pieces, x_key
        self.example_shape, self._dtype, self.is_image = shape, dtype, is_image
        self.resize, self.num_rows, self.options = resize, num_rows, options
        self.description = f"tfds:{builder.name} {'+'.join(pieces)}"

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _examples(self, indices: np.ndarray) -> Any:
        import tensorflow_datasets as tfds

        from kerastrain._keras import tf

        decoders = {self.x_key: tfds.decode.SkipDecoding()} if self.is_image else None
        ds = _records(self.builder, self.pieces, self.options, decoders)
        mask = np.zeros(self.num_rows, bool)
        mask[indices] = True
        keep = tf.constant(mask)
        feature = self.builder.info.features[self.x_key]
        resize, key, is_image = self.resize, self.x_key, self.is_image

        def decode(i: Any, example: Any) -> Any:
            x = example[key]
            if is_image:
                x = feature.decode_example(x)
            return i, resize(x)

        return ds.filter(lambda i, _: tf.gather(keep, i)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    def examples(self, indices: np.ndarray, *, shuffle: bool, seed: int | None = None):
        ds = self._examples(indices)
        if shuffle:
            ds = ds.shuffle(
                min(len(indices), STREAM_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True
            )
        return ds

    def read(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        found, values = [], []
        for i, x in self._examples(indices).batch(256).as_numpy_iterator():
            found.append(i)
            values.append(x)
        if not values:
            return np.empty((0, *self.example_shape), self.dtype)
        order = np.argsort(np.concatenate(found))
        stacked = np.concatenate(values)[order]  # rows in ascending index order
        return stacked[np.searchsorted(np.sort(indices), indices)]


def read_tfds(spec: str, options: DataConfig) -> TfdsData:
    """Reads ``"tfds:NAME"`` as supervised `(features, label)` pairs.

    Args:
        spec: `"tfds:NAME"` (a config or version may follow: `"tfds:NAME/CONFIG:1.0.0"`).
        options: `tfds_split`, `tfds_data_dir`, `tfds_download`, `image_size`,
            `in_memory_mb`.

    Returns:
        The features (or a stream), labels, class names and fixed splits.

    Raises:
        DataError: For an unknown name, a data set without supervised keys,
            non-numeric features, an unknown split, or a data set that is not
            prepared and cannot be downloaded (with offline instructions).
    """
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raise DataError(
            message(
                "TFDS data needs tensorflow-datasets, which is not installed",
                received={"data": spec},
                allowed="Install it with: pip install tensorflow-datasets",
            )
        ) from None
    from kerastrain._keras import tf

    name = spec[len(PREFIX) :]
    if not name:
        raise DataError(
            message(
                "The data names no TFDS data set",
                received={"data": spec},
                allowed="Write 'tfds:mnist', for example",
            )
        )
    builder = _builder(name, options.tfds_data_dir)
    keys = builder.info.supervised_keys
    if not keys or not all(isinstance(k, str) for k in keys[:2]):
        raise DataError(
            message(
                f"The TFDS data set {name!r} has no (features, label) supervised keys; its "
                f"features are {', '.join(builder.info.features)}",
                allowed="kerastrain trains on data sets with supervised keys",
            )
        )
    x_key, y_key = keys[0], keys[1]
    _prepare(builder, options)
    shape, dtype, is_image = _feature_info(builder, x_key, options)
    label = builder.info.features[y_key]
    class_names = list(label.names) if hasattr(label, "names") else None

    pieces = _pieces(options)
    import tensorflow_datasets as tfds

    decoders = {x_key: tfds.decode.SkipDecoding()} if is_image else None
    labels, parts, start = [], {}, 0
    for part, split in pieces:
        ds = _as_dataset(builder, split, options, decoders=decoders)
        y = np.concatenate(
            [b for b in ds.map(lambda ex: ex[y_key]).batch(4096).as_numpy_iterator()]
            or [np.empty(0, np.int64)]
        )
        labels.append(y)
        if part is not None:
            parts[part] = np.arange(start, start + len(y))
        start += len(y)
    y = np.concatenate(labels)
    if not len(y):
        raise DataError(
            message(
                f"The TFDS data set {name!r} has no example in the split",
                received={"data_options.tfds_split": options.tfds_split},
            )
        )
    splits = [split for _, split in pieces]
    full = "+".join(splits)
    if None in shape:  # images of varying size and no image_size: use the first one's
        first = next(iter(_as_dataset(builder, splits[0], options, as_supervised=True).take(1)))[0]
        shape = (*first.shape[:2], shape[-1])
        logger.info(
            "tfds:%s images vary in size; all are resized to the first one's, %s. Set "
            "data_options.image_size to choose.",
            name,
            shape[:2],
        )
    resize = _resizer(shape, is_image, fixed=tuple(builder.info.features[x_key].shape) == shape)
    description = f"tfds:{name} ({full})"
    nbytes = len(y) * math.prod(shape) * dtype.itemsize
    if nbytes <= options.in_memory_mb * 2**20:
        arrays = []
        for split in splits:
            ds = _as_dataset(builder, split, options, as_supervised=True)
            ds = ds.map(
                lambda x, _: resize(x), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
            arrays.extend(ds.batch(1024).as_numpy_iterator())
        x = np.concatenate(arrays)
        logger.info(
            "Read %s into memory: %d examples of shape %s.", description, len(x), x.shape[1:]
        )
    else:
        x = TfdsStream(builder, splits, x_key, shape, dtype, is_image, resize, len(y), options)
        logger.info(
            "%s: %.0f MiB decoded exceeds data_options.in_memory_mb=%g; streamed from its files.",
            description,
            nbytes / 2**20,
            options.in_memory_mb,
        )
    return TfdsData(x, y, class_names, parts or None, description)
