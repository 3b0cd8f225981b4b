"""Augmentation whose strength is one number: the adaptive policy
(``data_options.augment="auto"``).

A magnitude ``m`` in [0, 1], held in a `tf.Variable`, scales every
augmentation of the policy's list (`kerastrain.config.adaptive`): rotation
angles, zoom and translation ranges and the contrast range are drawn within
``m`` times their factor, Gaussian noise has ``m`` times its deviation, and
each example is mixed (mixup or cutmix) with probability ``m``. The
augmentation reads the variable on every batch, so the callback that moves
it between epochs (`kerastrain.training.adaptive_augment.AdaptiveAugmentation`) changes the
next epoch's batches without retracing the input pipeline. Rotation, zoom
and translation are one random affine map per image (nearest fill); every
draw is stateless and keyed by the batch's seed, as the fixed policies are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from kerastrain._keras import tf
from kerastrain.data.augment import _beta, _mix_labels, _partners, cutmix

logger = logging.getLogger(__name__)

__all__ = ["magnitude_variable", "adaptive_augmenter"]

Batch = tuple[Any, Any]


def magnitude_variable(value: float) -> tf.Variable:
    """The magnitude's variable (float32, not trainable), outside any
    strategy scope: it lives with the input pipeline, on the host."""
    with tf.init_scope():
        return tf.Variable(
            float(value), dtype=tf.float32, trainable=False, name="augment_magnitude"
        )


def _affine(x: tf.Tensor, seed: Any, m: tf.Tensor, factors: dict[str, float]) -> tf.Tensor:
    """One random rotation, zoom and translation per image, each within ``m``
    times its factor."""
    shape = tf.shape(x)
    n = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def draw(i: int, factor: float) -> tf.Tensor:
        return tf.random.stateless_uniform([n], seeds[i], -1.0, 1.0) * (factor * m)

    angle = draw(0, factors.get("rotation", 0.0)) * 2.0 * math.pi
    zoom = 1.0 + draw(1, factors.get("zoom", 0.0))
    tx = draw(2, factors.get("translation", 0.0)) * w
    ty = draw(3, factors.get("translation", 0.0)) * h
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # Output pixel (x, y) reads input pixel A (x - c) + c + t.
    transforms = tf.stack(
        [
            cos,
            -sin,
            cx - cos * cx + sin * cy + tx,
            sin,
            cos,
            cy - sin * cx - cos * cy + ty,
            tf.zeros([n]),
            tf.zeros([n]),
        ],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def _contrast(x: tf.Tensor, seed: Any, m: tf.Tensor, factor: float) -> tf.Tensor:
    n = tf.shape(x)[0]
    scale = 1.0 + tf.random.stateless_uniform([n], seed, -1.0, 1.0) * (factor * m)
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((x - mean) * tf.reshape(scale, [-1, 1, 1, 1]) + mean, 0.0, 255.0)


def _noise(scale: Any, stddev: float) -> Callable[[Any, Any, tf.Tensor], Any]:
    if isinstance(scale, dict):
        scales = {k: float(v) for k, v in scale.items()}

        def add(batch: Any, seed: Any, m: tf.Tensor) -> Any:
            out = dict(batch)
            for i, (name, s) in enumerate(sorted(scales.items())):
                t = batch[name]
                out[name] = t + tf.random.stateless_normal(
                    tf.shape(t), tf.random.experimental.stateless_fold_in(seed, i)
                ) * (stddev * s * m)
            return out

        return add
    column_scale = tf.constant(np.asarray(scale, np.float32) * stddev)

    def add_array(batch: Any, seed: Any, m: tf.Tensor) -> Any:
        return batch + tf.random.stateless_normal(tf.shape(batch), seed) * column_scale * m

    return add_array


def _mixup(x: Any, y: Any, seed: Any, alpha: float, m: tf.Tensor) -> Batch:
    """Mixup of each example with probability ``m`` (the others keep weight 1)."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    n = tf.shape(y)[0]
    chosen = tf.random.stateless_uniform([n], seeds[2]) < m
    weight = tf.where(chosen, _beta([n], alpha, seeds[0]), 1.0)
    partner = _partners(n, seeds[1])

    def blend(t: tf.Tensor) -> tf.Tensor:
        other = tf.gather(t, partner)
        if t.dtype == tf.string:
            return tf.where(weight >= 0.5, t, other)
        wt = tf.reshape(weight, [-1] + [1] * (len(t.shape) - 1))
        return wt * t + (1.0 - wt) * other

    return tf.nest.map_structure(blend, x), _mix_labels(y, partner, weight)


def _cutmix(x: tf.Tensor, y: Any, seed: Any, alpha: float, m: tf.Tensor) -> Batch:
    """Cutmix of each example with probability ``m``."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    mixed_x, mixed_y = cutmix(x, y, seeds[0], alpha)
    chosen = tf.random.stateless_uniform([tf.shape(x)[0]], seeds[1]) < m
    pick = lambda a, b: tf.where(  # noqa: E731
        tf.reshape(chosen, [-1] + [1] * (len(a.shape) - 1)), a, b
    )
    return pick(mixed_x, x), pick(mixed_y, tf.cast(y, tf.float32))


def adaptive_augmenter(
    augment: list[dict[str, Any]],
    x: Any,
    *,
    example_shape: tuple[int, ...],
    magnitude: tf.Variable,
    scale: Any = None,
) -> Callable[[Any, Any, Any], Batch] | None:
    """The function that augments a training batch at the magnitude held in
    ``magnitude`` (read on every batch).

    Args:
        augment: The policy's augmentations at full strength (parsed).
        x: The data's features, for their kind only.
        example_shape: Shape of one example.
        magnitude: The magnitude's variable (`magnitude_variable`).
        scale: Each numeric column's training standard deviation, for noise.
            Defaults to `None`.

    Returns:
        `augment(x, y, seed) -> (x, y)`, or None without augmentations.
    """
    if not augment:
        return None
    by_name = {a["name"]: a for a in augment}
    images = not isinstance(x, dict) and len(example_shape) >= 3
    factors = {k: by_name[k]["factor"] for k in ("rotation", "zoom", "translation") if k in by_name}
    contrast = by_name.get("contrast")
    noise = _noise(scale, by_name["noise"]["stddev"]) if "noise" in by_name else None
    mix = by_name.get("mixup") or by_name.get("cutmix")
    logger.info(
        "Augmenting training batches adaptively (magnitude %.2f to start): %s.",
        float(magnitude.numpy()),
        ", ".join(a["name"] for a in augment),
    )

    def apply(features: Any, labels: Any, batch_seed: Any) -> Batch:
        m = tf.convert_to_tensor(magnitude)
        seeds = tf.random.experimental.stateless_split(batch_seed, 4)
        if images and factors:
            features = _affine(features, seeds[0], m, factors)
        if images and contrast is not None:
            features = _contrast(features, seeds[1], m, contrast["factor"])
        if noise is not None:
            features = noise(features, seeds[2], m)
        if mix is not None:
            fn = _mixup if mix["name"] == "mixup" else _cutmix
            features, labels = fn(features, labels, seeds[3], mix["alpha"], m)
        return features, labels

    return apply
