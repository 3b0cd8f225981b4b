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
from kerastrain.data.validate import FLOAT32_MAX
from kerastrain.errors import DataError, message

__all__ = [
    "ModelInputs",
    "Standardizer",
    "fit_standardizer",
    "fit_target_scaler",
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
        features: The tensor the factory's first layer receives (for a table,
            its numeric and categorical columns encoded; None when it has
            only text columns).
        text: Each text column's token ids (`kerastrain.data.text.TextFeature`),
            by input name; empty when the data has no text.
    """

    inputs: Any
    features: Any
    text: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def feature_shape(self) -> tuple[int | None, ...]:
        """Shape of one example of ``features`` (without the batch axis);
        `(0,)` when there are only text columns."""
        if self.features is None:
            return (0,)
        return tuple(self.features.shape[1:])


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-feature (per-channel for images) mean and variance.

    float32 for features (the `Normalization` layer's weights); float64 for a
    regression target, whose scale is applied in float64 to the training
    targets and whose standard deviation becomes a float32 `Rescaling`.
    """

    mean: np.ndarray
    variance: np.ndarray


def _moments(x: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and variance over the last axis of ``x[indices]``.

    Chunk by chunk (no copy of the split), each chunk's mean and sum of
    squared deviations merged (Chan et al.), so that large values (1e25) do
    not overflow and values far from zero (1e9 + noise) keep their variance.
    """
    channels = x.shape[-1]
    chunk = max(1, CHUNK_BYTES // (8 * max(1, int(np.prod(x.shape[1:])))))
    mean = np.zeros(channels, np.float64)
    squares = np.zeros(channels, np.float64)  # sum of squared deviations from `mean`
    count = 0
    with np.errstate(over="ignore"):  # an overflow is inf, refused by the callers
        for start in range(0, len(indices), chunk):
            block = x[indices[start : start + chunk]].reshape(-1, channels).astype(np.float64)
            n = len(block)
            block_mean = block.mean(axis=0)
            block_squares = np.square(block - block_mean).sum(axis=0)
            total = count + n
            delta = block_mean - mean
            mean = mean + delta * (n / total)
            squares = squares + block_squares + np.square(delta) * (count * n / total)
            count = total
    return mean, squares / max(count, 1)


def _refuse_unrepresentable(
    mean: np.ndarray, scale: np.ndarray, scale_name: str, what: Any, allowed: str
) -> None:
    """Raises when a statistic the model holds as a float32 weight does not fit.

    Args:
        mean: The means.
        scale: The statistic that becomes a weight beside the mean (the
            variance of a `Normalization`, the standard deviation of a
            `Rescaling`).
        scale_name: Its name, for the message.
        what: Names the features at fault, given their indices.
        allowed: How to fix it.
    """
    too_large = np.flatnonzero(
        ~(np.abs(mean) <= FLOAT32_MAX) | ~(scale <= FLOAT32_MAX)  # NaN and inf too
    )
    if len(too_large):
        i = int(too_large[0])
        raise DataError(
            message(
                f"{what(too_large)} spread too widely to be standardized in float32: on the "
                f"training rows, the mean is {mean[i]:.3g} and the {scale_name} {scale[i]:.3g}, "
                f"beyond float32's largest number ({FLOAT32_MAX:.3g})",
                allowed=allowed,
            )
        )


def fit_standardizer(x: np.ndarray, indices: np.ndarray) -> Standardizer:
    """float32 mean and variance over the last axis of ``x[indices]``.

    A constant feature gets variance 1 (it is only centred), so that a value
    never seen in training cannot blow up to ``value / 1e-7``.

    Raises:
        DataError: When a feature's variance does not fit float32 (its
            standard deviation is above about 1.8e19).
    """
    mean, variance = _moments(x, indices)
    _refuse_unrepresentable(
        mean,
        variance,
        "variance",
        lambda bad: (
            f"Feature{'s' if len(bad) > 1 else ''} (last-axis index "
            f"{', '.join(str(int(i)) for i in bad[:10])}) {'are' if len(bad) > 1 else 'is'}"
        ),
        "Rescale those features (divide them by a power of ten), or set "
        "data_options.normalize=False",
    )
    variance[variance < 1e-12] = 1.0
    return Standardizer(mean.astype(np.float32), variance.astype(np.float32))


def fit_target_scaler(y: np.ndarray, indices: np.ndarray) -> Standardizer:
    """float64 mean and variance of the regression targets ``y[indices]``.

    Computed in float64, so that targets near 1e25 (whose variance, 1e50, no
    float32 holds) scale correctly; the model's outputs are then mapped back
    by a float32 `Rescaling` of the standard deviation. A constant target
    gets variance 1 (it is only centred).

    Raises:
        DataError: When the mean or the standard deviation do not fit float32.
    """
    mean, variance = _moments(y.reshape(len(y), 1), indices)
    _refuse_unrepresentable(
        mean,
        np.sqrt(variance),
        "standard deviation",
        lambda bad: "The regression targets are",
        "Rescale the targets (divide them by a power of ten), or set "
        "data_options.scale_target=False",
    )
    variance[variance <= 1e-12 * np.square(mean)] = 1.0
    return Standardizer(mean, variance)


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
        inputs, features, text = encoding.build()
        return ModelInputs(inputs=inputs, features=features, text=text)
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
