"""A folder of class sub-folders of images (PNG, JPEG, GIF, BMP).

```
photos/
  cat/  001.png 002.jpg ...
  dog/  001.png ...
```

Classes are the sub-folder names, sorted. Every file is decoded by tf.data
(in parallel) and resized to ``data_options.image_size`` (default: the first
image's size) with ``channels`` channels (default: the first image's).
Pixels stay uint8 (a quarter of float32's memory) and are cast per batch.

When the decoded images fit in ``data_options.in_memory_mb`` they are held in
memory; otherwise an `ImageStream` decodes them from the files every epoch.
A file that cannot be decoded is reported by path (`DataError`), never
skipped; files with other extensions are listed in a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.stream import Stream
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = ["ImageFolder", "ImageStream", "scan_folder", "read_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


class ImageFolder:
    """The files of an image folder, found by `scan_folder`.

    Attributes:
        root: The folder.
        paths: Every image file, class by class, sorted.
        labels: Each file's class index.
        class_names: The sub-folder names, sorted.
        ignored: Files that are not images (by extension).
    """

    def __init__(
        self,
        root: Path,
        paths: list[str],
        labels: np.ndarray,
        class_names: list[str],
        ignored: list[str],
    ):
        self.root, self.paths, self.labels = root, paths, labels
        self.class_names, self.ignored = class_names, ignored


def scan_folder(root: str | os.PathLike) -> ImageFolder:
    """Lists the images of a folder of class sub-folders.

    Raises:
        DataError: When the folder has fewer than two class sub-folders, or
            a class sub-folder holds no image.
    """
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            message(
                f"The image folder {str(root)!r} has no class sub-folders"
                + (f" (only files: {', '.join(loose[:5])})" if loose else " (it is empty)"),
                allowed="Put each class's images in a sub-folder named after the class",
            )
        )
    if len(classes) == 1:
        raise DataError(
            message(
                f"The image folder {str(root)!r} has a single class sub-folder, {classes[0]!r}: "
                "a classifier needs at least two classes, and one trained on a single class "
                "answers it for everything (with a perfect score)",
                allowed="Put each class's images in its own sub-folder of the folder (pass the "
                "folder that holds the class folders, not a class folder)",
            )
        )
    paths: list[str] = []
    labels: list[int] = []
    ignored = [str(root / name) for name in loose]
    for index, name in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(full)
                elif not filename.startswith("."):
                    ignored.append(full)
        if not found:
            raise DataError(
                message(
                    f"The class folder {str(root / name)!r} holds no image (PNG, JPEG, GIF or "
                    "BMP file)",
                    allowed="Add images or remove the folder",
                )
            )
        paths.extend(found)
        labels.extend([index] * len(found))
    if ignored:
        logger.warning(
            "Image folder %s: ignored %d files that are not images: %s%s",
            root,
            len(ignored),
            ", ".join(ignored[:5]),
            ", ..." if len(ignored) > 5 else "",
        )
    return ImageFolder(root, paths, np.asarray(labels, np.int64), classes, ignored)


def _decoder(size: tuple[int, int], channels: int):
    from kerastrain._keras import tf

    def decode(path: Any) -> Any:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        image = tf.image.resize(image, size)
        image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        return tf.ensure_shape(image, (*size, channels))

    return decode


def _first_image(path: str) -> tuple[tuple[int, int], int]:
    from kerastrain._keras import tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        raise DataError(
            message(
                f"Cannot decode the image {path!r}: {exc.message.splitlines()[0]}",
                allowed="Remove or replace it; kerastrain does not skip files silently",
            )
        ) from None
    return (int(image.shape[0]), int(image.shape[1])), int(image.shape[2])


def _decode_all(
    paths: list[str], indices: np.ndarray, size: tuple[int, int], channels: int, keep: bool
) -> np.ndarray | None:
    """Decodes the files ``indices`` in parallel; raises naming every failure.

    Returns the stacked images when `keep`, else None (a check only).
    """
    from kerastrain._keras import tf

    decode = _decoder(size, channels)
    table = tf.constant(paths)

    def load(i: Any) -> Any:
        image = decode(tf.gather(table, i))
        # A value of the pixels, so that the decode cannot be optimized away.
        return (i, image) if keep else (i, tf.reduce_max(image))

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    ok, images = [], []
    for i, image in ds.batch(256).as_numpy_iterator():
        ok.append(i)
        if keep:
            images.append(image)
    ok_index = np.concatenate(ok) if ok else np.empty(0, np.int64)
    bad = np.setdiff1d(np.asarray(indices, np.int64), ok_index)
    if len(bad):
        shown = "\n  ".join(paths[i] for i in bad[:10])
        raise DataError(
            message(
                f"{len(bad)} image file{'s' if len(bad) != 1 else ''} cannot be decoded "
                f"(corrupt, truncated or not an image):\n  {shown}"
                + ("\n  ..." if len(bad) > 10 else "")
                + "\n",
                allowed="Remove or replace them; kerastrain does not skip files silently",
            )
        )
    if not keep:
        return None
    return np.concatenate(images) if images else np.empty((0, *size, channels), np.uint8)


class ImageStream(Stream):
    """The images of a folder, decoded from their files every epoch.

    Args:
        paths: The image files.
        size: `(height, width)` they are resized to.
        channels: 1 or 3.
        description: For the report.
    """

    def __init__(self, paths: list[str], size: tuple[int, int], channels: int, description: str):
        self.paths = paths
        self.size = size
        self.channels = channels
        self.num_rows = len(paths)
        self.example_shape = (*size, channels)
        self.description = description

    def examples(self, indices: np.ndarray, *, shuffle: bool, seed: int | None = None):
        from kerastrain._keras import tf

        decode = _decoder(self.size, self.channels)
        table = tf.constant(self.paths)
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
        if shuffle:
            ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        return ds.map(
            lambda i: (i, decode(tf.gather(table, i))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle,
        )

    def read(self, indices: np.ndarray) -> np.ndarray:
        return _decode_all(self.paths, np.asarray(indices), self.size, self.channels, keep=True)


def read_image_folder(
    root: str | os.PathLike, options: DataConfig
) -> tuple[np.ndarray | ImageStream, np.ndarray, list[str]]:
    """Reads an image folder into uint8 arrays, or a stream when too large.

    Args:
        root: The folder of class sub-folders.
        options: `image_size`, `channels`, `in_memory_mb`.

    Returns:
        The images `(n, height, width, channels)` (or an `ImageStream`), the
        class index of each, and the class names.

    Raises:
        DataError: For an empty folder, an empty class, or any file that
            cannot be decoded (every such path is listed).
    """
    folder = scan_folder(root)
    first_size, first_channels = _first_image(folder.paths[0])
    size = tuple(options.image_size) if options.image_size else first_size
    channels = options.channels or (1 if first_channels == 1 else 3)
    stream = ImageStream(folder.paths, size, channels, f"image folder {folder.root}")
    counts = np.bincount(folder.labels, minlength=len(folder.class_names))
    logger.info(
        "Image folder %s: %d images in %d classes (%s), read as %dx%dx%d.",
        folder.root,
        len(folder.paths),
        len(folder.class_names),
        ", ".join(f"{n}: {c}" for n, c in zip(folder.class_names, counts)),
        *size,
        channels,
    )
    everything = np.arange(len(folder.paths))
    if stream.decoded_bytes() <= options.in_memory_mb * 2**20:
        images = _decode_all(folder.paths, everything, size, channels, keep=True)
        return images, folder.labels, folder.class_names
    logger.info(
        "Image folder %s: %.0f MiB decoded exceeds data_options.in_memory_mb=%g; the "
        "images are streamed from the files. Checking that every file decodes ...",
        folder.root,
        stream.decoded_bytes() / 2**20,
        options.in_memory_mb,
    )
    _decode_all(folder.paths, everything, size, channels, keep=False)
    return stream, folder.labels, folder.class_names
