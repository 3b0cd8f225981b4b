"""Choosing a `tf.distribute` strategy from the ``strategy`` option."""

from __future__ import annotations

import logging
from typing import Any

from kerastrain._keras import tf
from kerastrain.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["make_strategy"]


def _is_strategy(value: Any) -> bool:
    return isinstance(value, tf.distribute.Strategy)


def make_strategy(spec: Any) -> tf.distribute.Strategy:
    """The strategy that ``spec`` names, with its choice logged.

    Args:
        spec: `"auto"` (several GPUs: Mirrored; one GPU: that GPU; else the
            default strategy on the CPU), `"cpu"`, `"gpu"`, `"mirrored"`, or a
            `tf.distribute.Strategy`, used as is.

    Returns:
        The strategy; build and compile models inside its `scope()`.

    Raises:
        ConfigError: When the hardware asked for is not there.
    """
    if _is_strategy(spec):
        logger.info("Strategy: %s, as given.", type(spec).__name__)
        return spec
    gpus = tf.config.list_logical_devices("GPU")
    if spec == "auto":
        if len(gpus) > 1:
            reason, strategy = f"{len(gpus)} GPUs", tf.distribute.MirroredStrategy()
        elif gpus:
            reason, strategy = "one GPU", tf.distribute.OneDeviceStrategy(gpus[0].name)
        else:
            reason, strategy = "no GPU or TPU found", tf.distribute.get_strategy()
        logger.info("strategy='auto' chose %s (%s).", type(strategy).__name__, reason)
        return strategy
    if spec == "cpu":
        return tf.distribute.get_strategy()
    if spec == "gpu":
        if not gpus:
            raise ConfigError("strategy='gpu' was asked for but TensorFlow sees no GPU; use "
                              "'auto' or 'cpu', or check the CUDA installation.")
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    if spec == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ConfigError(f"strategy={spec!r} is not available in this version of kerastrain; "
                      "use 'auto', 'cpu', 'gpu', 'mirrored' or pass a tf.distribute.Strategy.")
