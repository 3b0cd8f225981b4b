"""Augmentation of training batches, in the tf.data pipeline.

- Images: random flip, rotation, zoom, translation, contrast and crop, as
  tf_keras preprocessing layers called with ``training=True`` on each
  training batch (pixel values; contrast clips to [0, 255]). "crop" pads the
  image by ``factor`` of its size and crops a random window of the original
  size back, so every batch keeps the model's input shape.
- Batches: mixup (each example blended with another, weight drawn from
  Beta(alpha, alpha)) and cutmix (a random box pasted from another example),
  both mixing the labels by the same weight (multi-class labels are one-hot
  encoded first, and the loss is then the categorical one).
- Tables: Gaussian noise on the numeric columns, ``stddev`` in units of each
  column's training standard deviation, i.e. on the standardized features.

Augmentation is applied only to the training dataset, never to validation,
evaluation or the exported model: nothing of it is in the model, so exported
artifacts answer deterministically. Every random draw is seeded from the
run's seed (stateless draws, keyed per batch), so a run can be repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf

logger = logging.getLogger(__name__)

__all__ = ["image_layers", "batch_augmenter", "mixup", "cutmix"]

Batch = tuple[Any, Any]


def image_layers(
    augment: list[dict[str, Any]], image_shape: tuple[int, ...], seed: int | None = None
) -> keras.Sequential | None:
    """The image augmentations of ``augment`` as one `Sequential` of tf_keras
    preprocessing layers (None when there are none).

    Args:
        augment: Parsed augmentations (`kerastrain.config.data.parse_augment`).
        image_shape: `(height, width, channels)`.
        seed: Seeds the layers (each its own). Defaults to `None`.
    """
    height, width = image_shape[0], image_shape[1]
    layers: list[keras.layers.Layer] = []
    for i, item in enumerate(augment):
        name, s = item["name"], None if seed is None else seed + 101 * (i + 1)
        if name == "flip":
            layers.append(keras.layers.RandomFlip(item["mode"], seed=s, name="flip"))
        elif name == "rotation":
            layers.append(
                keras.layers.RandomRotation(
                    item["factor"], fill_mode="nearest", seed=s, name="rotation"
                )
            )
        elif name == "zoom":
            layers.append(
                keras.layers.RandomZoom(
                    item["factor"], item["factor"], fill_mode="nearest", seed=s, name="zoom"
                )
            )
        elif name == "translation":
            layers.append(
                keras.layers.RandomTranslation(
                    item["factor"], item["factor"], fill_mode="nearest", seed=s, name="translation"
                )
            )
        elif name == "contrast":
            layers.append(keras.layers.RandomContrast(item["factor"], seed=s, name="contrast"))
        elif name == "crop":
            pad_h = max(1, round(item["factor"] * height))
            pad_w = max(1, round(item["factor"] * width))
            layers.append(keras.layers.ZeroPadding2D((pad_h, pad_w), name="crop_pad"))
            layers.append(keras.layers.RandomCrop(height, width, seed=s, name="crop"))
    if not layers:
        return None
    model = keras.Sequential(layers, name="augment")
    model.build((None, *image_shape))
    return model


def _beta(shape: Any, alpha: float, seed: Any) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def _partners(n: Any, seed: Any) -> tf.Tensor:
    """A random permutation of the batch (the example each one mixes with)."""
    return tf.argsort(tf.random.stateless_uniform([n], seed))


def _mix_labels(y: Any, partner: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    y = tf.cast(y, tf.float32)
    w = tf.reshape(weight, [-1] + [1] * (len(y.shape) - 1))
    return w * y + (1.0 - w) * tf.gather(y, partner)


def mixup(x: Any, y: Any, seed: Any, alpha: float) -> Batch:
    """Blends each example (and label) with another of the batch.

    A table's string columns take the value of whichever example weighs more.

    Args:
        x: A batch of features (a tensor, or a dict of column tensors).
        y: Its labels: float (one-hot, binary or regression targets).
        seed: A `[2]` int seed of the stateless draws.
        alpha: The Beta distribution's parameter.

    Returns:
        The mixed batch.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    n = tf.shape(y)[0]
    weight = _beta([n], alpha, seeds[0])
    partner = _partners(n, seeds[1])

    def blend(t: tf.Tensor) -> tf.Tensor:
        other = tf.gather(t, partner)
        if t.dtype == tf.string:
            return tf.where(weight >= 0.5, t, other)
        w = tf.reshape(weight, [-1] + [1] * (len(t.shape) - 1))
        return w * t + (1.0 - w) * other

    return tf.nest.map_structure(blend, x), _mix_labels(y, partner, weight)


def cutmix(x: tf.Tensor, y: Any, seed: Any, alpha: float) -> Batch:
    """Pastes a random box of another example into each image; labels are
    mixed by the share of the image each keeps.

    Args:
        x: Images `(n, height, width, channels)`.
        y: Float labels (one-hot, binary).
        seed: A `[2]` int seed.
        alpha: The Beta distribution's parameter.

    Returns:
        The mixed batch.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shape = tf.shape(x)
    n, height, width = shape[0], shape[1], shape[2]
    lam = _beta([n], alpha, seeds[0])
    partner = _partners(n, seeds[1])
    cut = tf.sqrt(1.0 - lam)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    cy = tf.random.stateless_uniform([n], seeds[2]) * h
    cx = tf.random.stateless_uniform([n], seeds[3]) * w
    top = tf.clip_by_value(cy - cut * h / 2, 0.0, h)
    bottom = tf.clip_by_value(cy + cut * h / 2, 0.0, h)
    left = tf.clip_by_value(cx - cut * w / 2, 0.0, w)
    right = tf.clip_by_value(cx + cut * w / 2, 0.0, w)
    rows = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :]
    cols = tf.cast(tf.range(width), tf.float32)[tf.newaxis, :]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    box = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], x.dtype)[..., tf.newaxis]
    mixed = x * (1.0 - box) + tf.gather(x, partner) * box
    kept = 1.0 - tf.reduce_mean(box, axis=[1, 2, 3])
    return mixed, _mix_labels(y, partner, tf.cast(kept, tf.float32))


def _noise(x: Any, stddev: float, scale: Any) -> Callable[[Any, Any], Any]:
    """Adds N(0, stddev * column std) to numeric columns."""
    if isinstance(x, dict):
        scales = {k: float(v) for k, v in scale.items()}

        def add(batch: Any, seed: Any) -> Any:
            out = dict(batch)
            for i, (name, s) in enumerate(sorted(scales.items())):
                t = batch[name]
                out[name] = t + tf.random.stateless_normal(
                    tf.shape(t), tf.random.experimental.stateless_fold_in(seed, i)
                ) * (stddev * s)
            return out

        return add
    column_scale = tf.constant(np.asarray(scale, np.float32) * stddev)

    def add_array(batch: Any, seed: Any) -> Any:
        return batch + tf.random.stateless_normal(tf.shape(batch), seed) * column_scale

    return add_array


def batch_augmenter(
    augment: list[dict[str, Any]],
    x: Any,
    *,
    seed: int,
    example_shape: tuple[int, ...],
    scale: Any = None,
) -> Callable[[Any, Any, Any], Batch] | None:
    """The function that augments a training batch, or None.

    Args:
        augment: Parsed augmentations.
        x: The data's features (an array, a dict of columns or a stream),
            for its kind only.
        seed: The run's seed.
        example_shape: Shape of one example.
        scale: Each numeric column's training standard deviation, for noise
            (a dict for tables, an array otherwise). Defaults to `None`.

    Returns:
        `augment(x, y, seed) -> (x, y)` taking float features, labels as the
        loss wants them, and a `[2]` int64 seed unique to the batch.
    """
    if not augment:
        return None
    by_name = {a["name"]: a for a in augment}
    images = not isinstance(x, dict) and len(example_shape) >= 3
    layers = image_layers(augment, example_shape, seed) if images else None
    noise = _noise(x, by_name["noise"]["stddev"], scale) if "noise" in by_name else None
    mix = by_name.get("mixup") or by_name.get("cutmix")
    logger.info("Augmenting training batches: %s.", ", ".join(a["name"] for a in augment))

    def apply(features: Any, labels: Any, batch_seed: Any) -> Batch:
        seeds = tf.random.experimental.stateless_split(batch_seed, 2)
        if layers is not None:
            features = layers(features, training=True)
        if noise is not None:
            features = noise(features, seeds[0])
        if mix is not None:
            fn = mixup if mix["name"] == "mixup" else cutmix
            features, labels = fn(features, labels, seeds[1], mix["alpha"])
        return features, labels

    return apply
