"""Preprocessing that travels inside the model: standardization, and a
table's column encodings.

Statistics are computed on the training rows only, in NumPy (chunk by chunk,
so no copy of the split is made), and baked into a `Normalization` layer
built inside the strategy scope. The exported SavedModel and TFLite files
therefore take raw inputs (for a table: a dict of raw columns).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kerastrain._keras import keras

__all__ = [
    "ModelInputs",
    "Standardizer",
    "fit_standardizer",
    "model_inputs",
    "with_target_scale",
]

#: Bytes of features read at a time (in float64) while computing statistics.
CHUNK_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """The model's raw inputs and the features after preprocessing.

    A factory builds its layers on ``features`` and returns
    ``keras.Model(inputs.inputs, outputs)``, so that preprocessing (the
    adapted `Normalization`, later encoders) lives inside the one flat
    functional model that is trained, compressed and exported.

    Attributes:
        inputs: The `keras.Input` (or a dict of them) the model is called on.
        features: The tensor the factory's first layer receives.
    """

    inputs: Any
    features: Any

    @property
    def feature_shape(self) -> tuple[int | None, ...]:
        """Shape of one example of ``features`` (without the batch axis)."""
        return tuple(self.features.shape[1:])


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-feature (per-channel for images) mean and variance."""

    mean: np.ndarray
    variance: np.ndarray


def fit_standardizer(x: np.ndarray, indices: np.ndarray) -> Standardizer:
    """Mean and variance over the last axis of ``x[indices]``.

    A constant feature gets variance 1 (it is only centred), so that a value
    never seen in training cannot blow up to ``value / 1e-7``.
    """
    channels = x.shape[-1]
    chunk = max(1, CHUNK_BYTES // (8 * max(1, int(np.prod(x.shape[1:])))))
    total = np.zeros(channels, np.float64)
    squares = np.zeros(channels, np.float64)
    count = 0
    for start in range(0, len(indices), chunk):
        block = x[indices[start : start + chunk]].reshape(-1, channels).astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / max(count, 1)
    variance = np.maximum(squares / max(count, 1) - np.square(mean), 0.0)
    variance[variance < 1e-12] = 1.0
    return Standardizer(mean.astype(np.float32), variance.astype(np.float32))


def model_inputs(
    feature_shape: tuple[int, ...], standardizer: Standardizer | None, encoding: Any = None
) -> ModelInputs:
    """The model's `Input` and, when asked, the standardized features.

    Call inside the strategy scope (the layer's variables are created here).

    Args:
        feature_shape: Shape of one example.
        standardizer: Training statistics, or None for raw features.
        encoding: A table's `TabularEncoding`: the inputs are then a dict of
            one `Input` per column and the features the encoded vector
            (`feature_shape` and `standardizer` are not used). Defaults to
            `None`.

    Returns:
        The inputs and the features a factory builds on.
    """
    if encoding is not None:
        inputs, features = encoding.build()
        return ModelInputs(inputs=inputs, features=features)
    inputs = keras.Input(shape=feature_shape, name="inputs")
    features = inputs
    if standardizer is not None:
        features = keras.layers.Normalization(
            axis=-1, mean=standardizer.mean, variance=standardizer.variance, name="normalize"
        )(inputs)
    return ModelInputs(inputs=inputs, features=features)


def with_target_scale(model: keras.Model, scaler: Standardizer | None) -> keras.Model:
    """Appends ``outputs * std + mean`` so a model trained on standardized
    regression targets answers in the original units. Returns ``model`` itself
    when there is no scaler."""
    if scaler is None:
        return model
    std = float(np.sqrt(scaler.variance[0]))
    rescale = keras.layers.Rescaling(
        scale=std, offset=float(scaler.mean[0]), dtype="float32", name="target_scale"
    )
    return keras.Model(model.inputs, rescale(model.outputs[0]), name=model.name)
