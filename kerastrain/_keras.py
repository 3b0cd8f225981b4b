"""The one place that imports Keras.

kerastrain builds every model with ``tf_keras`` (the Keras 2 API), because
TensorFlow Model Optimization (pruning, QAT, clustering) refuses Keras 3
objects. Every other module does ``from kerastrain._keras import keras, tf``.
Nothing here reads ``tf.keras``, whose meaning depends on ``TF_USE_LEGACY_KERAS``
(which importing TF-MOT sets for the whole process).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kerastrain.errors import ConfigError, message
from kerastrain.logs import print_tensorflow_once

__all__ = ["keras", "tf", "is_keras3_object", "ensure_tf_keras"]

tf.get_logger()  # TensorFlow adds its own handler now, if ever
print_tensorflow_once()


def is_keras3_object(obj: object) -> bool:
    """Whether ``obj`` is an instance of a Keras 3 class (package ``keras``)."""
    for klass in type(obj).__mro__:
        module = getattr(klass, "__module__", "") or ""
        if module == "keras" or module.startswith("keras."):
            return True
    return False


def ensure_tf_keras(obj: object, what: str) -> None:
    """Refuses a Keras 3 object with an error that says why and what to do.

    Args:
        obj: A model, layer, callback, optimizer or other Keras object.
        what: The option it was passed as, for the message (``"model"``).

    Raises:
        ConfigError: When ``obj`` comes from Keras 3.
    """
    if is_keras3_object(obj):
        raise ConfigError(
            message(
                f"The {what!r} option received a Keras 3 object "
                f"({type(obj).__module__}.{type(obj).__qualname__}). kerastrain builds "
                "tf_keras (Keras 2) models because TensorFlow Model Optimization (pruning, "
                "quantization-aware training, clustering) accepts nothing else",
                allowed="Build it with `import tf_keras as keras` instead of `import keras` "
                "(or set TF_USE_LEGACY_KERAS=1 before importing TensorFlow so that "
                "`tf.keras` is tf_keras)",
            )
        )
