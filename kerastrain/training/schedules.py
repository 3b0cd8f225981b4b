"""Learning-rate schedules, in optimizer steps, that save and reload with a model.

Each class is a tf_keras `LearningRateSchedule` with `get_config`, registered
under the package name ``"kerastrain"``, so a `.keras` file holding an
optimizer with one of them reloads with `tf_keras.models.load_model` once
this module is imported (``import kerastrain.training.schedules``).

Where tf_keras already has the schedule (exponential, polynomial, cosine,
cosine with restarts, piecewise constant) kerastrain uses it; this module adds
constant, step, one-cycle and inverse square root, and `Warmup`, which
wraps any schedule, the way TF Model Garden's
``LinearWarmup(after_warmup_lr_sched, warmup_steps, warmup_learning_rate)``
does, rather than a callback fighting the optimizer. Unlike Model Garden,
the wrapped schedule sees the steps *after* warmup (step 0 when warmup
ends), so warmup ends exactly at the wrapped schedule's first value.
(`kerastrain.callbacks.Scaled`, the schedule the blow-up guard lowers, lives
with the guard.)
"""

from __future__ import annotations

import math
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, message

__all__ = [
    "Constant",
    "StepDecay",
    "OneCycle",
    "InverseSquareRoot",
    "Warmup",
    "LearningRateSchedule",
    "value_at",
]

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule
_register = keras.saving.register_keras_serializable(package="kerastrain")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(message(f"Argument `{name}` must be {bound}", received={name: value}))


def _as_float(step: Any) -> tf.Tensor:
    return tf.cast(step, tf.float32)


def value_at(schedule: Any, step: int | float) -> float:
    """The learning rate ``schedule`` (a schedule or a number) gives at ``step``.

    Example:
        >>> round(value_at(StepDecay(0.1, step_size=10, gamma=0.5), 25), 6)
        0.025
    """
    if callable(schedule):
        return float(schedule(tf.constant(step, tf.float32)))
    return float(schedule)


@_register
class Constant(LearningRateSchedule):
    """The same rate at every step (so that warmup has something to wrap).

    Args:
        learning_rate: The rate.
        name: Name of the operation. Defaults to `None`.
    """

    def __init__(self, learning_rate: float, name: str | None = None):
        _positive("learning_rate", learning_rate, allow_zero=True)
        self.learning_rate = float(learning_rate)
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        return tf.constant(self.learning_rate, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "name": self.name}


@_register
class StepDecay(LearningRateSchedule):
    """``initial_learning_rate * gamma ** floor(step / step_size)``.

    Args:
        initial_learning_rate: The first rate.
        step_size: Steps between two decays.
        gamma: The factor of each decay. Defaults to `0.1`.
        name: Name of the operation. Defaults to `None`.

    Raises:
        ConfigError: For a `step_size` or `gamma` that is not positive.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        step_size: int,
        gamma: float = 0.1,
        name: str | None = None,
    ):
        _positive("step_size", step_size)
        _positive("gamma", gamma)
        self.initial_learning_rate = float(initial_learning_rate)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "StepDecay"):
            decays = tf.floor(_as_float(step) / float(self.step_size))
            return self.initial_learning_rate * tf.pow(self.gamma, decays)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "name": self.name,
        }


@_register
class OneCycle(LearningRateSchedule):
    """The one-cycle policy (Smith & Topin), step for step PyTorch's ``OneCycleLR``
    with its defaults (two phases, ``anneal_strategy="cos"``).

    The first update (step 0) uses ``max_learning_rate / div_factor``; a cosine
    rises to ``max_learning_rate`` at step ``pct_start * total_steps - 1``
    and falls to ``max_learning_rate / div_factor / final_div_factor`` at step
    ``total_steps - 1``, the last update of the cycle. After it the rate stays
    at that end value (PyTorch refuses to step past the cycle instead).

    Args:
        max_learning_rate: The peak rate.
        total_steps: Length of the cycle in steps (updates).
        pct_start: Fraction of the cycle spent rising. Defaults to `0.3`.
        div_factor: The start is the peak divided by this. Defaults to `25.0`.
        final_div_factor: The end is the start divided by this.
            Defaults to `1e4`.
        name: Name of the operation. Defaults to `None`.

    Raises:
        ConfigError: For a non-positive length or factor, or `pct_start`
            outside (0, 1).

    Example:
        >>> cycle = OneCycle(0.1, total_steps=100)
        >>> [round(value_at(cycle, s), 7) for s in (0, 29, 99)]
        [0.004, 0.1, 4e-07]
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        name: str | None = None,
    ):
        _positive("total_steps", total_steps)
        _positive("div_factor", div_factor)
        _positive("final_div_factor", final_div_factor)
        if not 0 < pct_start < 1:
            raise ConfigError(
                message("Argument `pct_start` must be in (0, 1)", received={"pct_start": pct_start})
            )
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    @staticmethod
    def _cosine(low: float, high: float, fraction: tf.Tensor) -> tf.Tensor:
        # PyTorch's cosine anneal, low + (high - low) * (1 - cos(pi * fraction)) / 2, with
        # `fraction` the way from `low` towards `high`, written as sin(pi/2 * fraction)**2:
        # the same value, a sum of two positive terms, so that float32 keeps it to 1e-7
        # (the cosine form loses digits to cancellation near the low end).
        return low + (high - low) * tf.square(tf.sin(math.pi / 2.0 * fraction))

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "OneCycle"):
            step = _as_float(step)
            peak = self.max_learning_rate
            start = peak / self.div_factor
            end = start / self.final_div_factor
            # PyTorch's phase ends (in float64, as PyTorch computes them): the peak
            # at step pct_start * total_steps - 1, the end at the last update.
            top = self.pct_start * self.total_steps - 1.0
            last = self.total_steps - 1.0
            if top > 0:
                up = self._cosine(start, peak, tf.clip_by_value(step / top, 0.0, 1.0))
            else:  # a rise shorter than one step: the cycle starts at the peak
                up = tf.fill(tf.shape(step), tf.constant(peak, tf.float32))
            left = tf.clip_by_value((last - step) / (last - top), 0.0, 1.0)
            down = self._cosine(end, peak, left)
            return tf.where(step <= top, up, down)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }


@_register
class InverseSquareRoot(LearningRateSchedule):
    """``initial_learning_rate / sqrt(1 + step / timescale)``.

    After a warmup of `timescale` steps this is the Transformer's (and
    fairseq's) ``peak * sqrt(warmup / global_step)``.

    Args:
        initial_learning_rate: The rate at step 0.
        timescale: Steps after which the rate has fallen by `sqrt(2)`.
        name: Name of the operation. Defaults to `None`.

    Raises:
        ConfigError: For a `timescale` that is not positive.
    """

    def __init__(self, initial_learning_rate: float, timescale: int, name: str | None = None):
        _positive("timescale", timescale)
        self.initial_learning_rate = float(initial_learning_rate)
        self.timescale = int(timescale)
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "InverseSquareRoot"):
            step = tf.maximum(_as_float(step), 0.0)
            return self.initial_learning_rate * tf.math.rsqrt(1.0 + step / float(self.timescale))

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "timescale": self.timescale,
            "name": self.name,
        }


def _serialize(schedule: Any) -> Any:
    if isinstance(schedule, LearningRateSchedule):
        return keras.optimizers.schedules.serialize(schedule)
    return float(schedule)


def _deserialize(value: Any, custom_objects: Any = None) -> Any:
    if isinstance(value, dict):
        return keras.optimizers.schedules.deserialize(value, custom_objects=custom_objects)
    return float(value)


def _call(schedule: Any, step: tf.Tensor) -> tf.Tensor:
    if isinstance(schedule, LearningRateSchedule):
        return tf.cast(schedule(step), tf.float32)
    return tf.constant(float(schedule), tf.float32)


@_register
class Warmup(LearningRateSchedule):
    """Warms the rate up from `warmup_learning_rate`, then follows `schedule`.

    During the first `warmup_steps` steps the rate rises from
    `warmup_learning_rate` to ``schedule(0)``, linearly or geometrically;
    from then on it is ``schedule(step - warmup_steps)``.

    Args:
        schedule: The schedule after warmup, or a constant rate.
        warmup_steps: Length of the warmup in steps (0: no warmup).
        warmup_learning_rate: The first rate. Defaults to `None`: 0 for
            linear warmup, a hundredth of the peak for exponential warmup.
        method: `"linear"` or `"exponential"`. Defaults to `"linear"`.
        name: Name of the operation. Defaults to `None`.

    Raises:
        ConfigError: For a negative length, an unknown method, or an
            exponential warmup from 0.

    Example:
        >>> lr = Warmup(keras.optimizers.schedules.CosineDecay(0.1, 1000), warmup_steps=100)
        >>> round(value_at(lr, 50), 6), round(value_at(lr, 100), 6)
        (0.05, 0.1)
    """

    def __init__(
        self,
        schedule: Any,
        warmup_steps: int,
        warmup_learning_rate: float | None = None,
        method: str = "linear",
        name: str | None = None,
    ):
        _positive("warmup_steps", warmup_steps, allow_zero=True)
        if method not in ("linear", "exponential"):
            raise ConfigError(
                message(
                    "Argument `method` must be 'linear' or 'exponential'",
                    received={"method": method},
                    candidates=("linear", "exponential"),
                )
            )
        if (
            method == "exponential"
            and warmup_learning_rate is not None
            and warmup_learning_rate <= 0
        ):
            raise ConfigError(
                message(
                    "Argument `warmup_learning_rate` must be > 0 for an exponential warmup",
                    received={"warmup_learning_rate": warmup_learning_rate},
                )
            )
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.warmup_learning_rate = (
            None if warmup_learning_rate is None else float(warmup_learning_rate)
        )
        self.method = method
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "Warmup"):
            step = _as_float(step)
            if self.warmup_steps == 0:
                return _call(self.schedule, step)
            length = float(self.warmup_steps)
            after = _call(self.schedule, tf.maximum(step - length, 0.0))
            peak = _call(self.schedule, tf.constant(0.0))
            fraction = tf.clip_by_value(step / length, 0.0, 1.0)
            if self.method == "linear":
                start = 0.0 if self.warmup_learning_rate is None else self.warmup_learning_rate
                warm = start + (peak - start) * fraction
            else:
                start = (
                    peak / 100.0
                    if self.warmup_learning_rate is None
                    else tf.constant(self.warmup_learning_rate)
                )
                warm = start * tf.pow(peak / start, fraction)
            return tf.where(step < length, warm, after)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": _serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
            "warmup_learning_rate": self.warmup_learning_rate,
            "method": self.method,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Warmup:
        config = dict(config)
        config["schedule"] = _deserialize(config["schedule"], custom_objects)
        return cls(**config)
