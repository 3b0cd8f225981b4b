"""The loss blow-up guard: recover from a NaN or infinite loss, or fail clearly.

The guard lowers a float learning rate directly, and a schedule through
`Scaled`, the schedule wrapper whose factor it holds in a variable. The
optimizer helpers the other callbacks share (`inner_optimizer`,
`schedule_of`, `learning_rate_of`) live here too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from kerastrain import mesh as meshes
from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, TrainingDivergedError, message

logger = logging.getLogger(__name__)

__all__ = [
    "BlowupGuard",
    "Scaled",
    "inner_optimizer",
    "learning_rate_of",
    "schedule_of",
    "set_learning_rate_scale",
]

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable(package="kerastrain")
class Scaled(LearningRateSchedule):
    """``scale * schedule(step)``, with `scale` held in a variable.

    The blow-up guard multiplies `scale` down after a NaN loss, which lowers
    a schedule's rate without rebuilding the optimizer or the training
    function. The variable's value is saved in `get_config`; like
    `kerastrain.training.schedules`, it is registered under the package name
    ``"kerastrain"``, so a saved optimizer holding one reloads.

    Args:
        schedule: The schedule to scale (or a constant rate).
        scale: The initial factor. Defaults to `1.0`.
        name: Name of the operation. Defaults to `None`.
    """

    def __init__(self, schedule: Any, scale: float = 1.0, name: str | None = None):
        if scale is None or scale <= 0:
            raise ConfigError(f"Argument `scale` must be > 0. Received: scale={scale!r}")
        self.schedule = schedule
        self.scale = tf.Variable(
            float(scale), trainable=False, dtype=tf.float32, name="learning_rate_scale"
        )
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "Scaled"):
            if isinstance(self.schedule, LearningRateSchedule):
                return self.scale * tf.cast(self.schedule(step), tf.float32)
            return self.scale * tf.constant(float(self.schedule), tf.float32)

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        return {
            "schedule": keras.optimizers.schedules.serialize(schedule)
            if isinstance(schedule, LearningRateSchedule)
            else float(schedule),
            "scale": float(self.scale.numpy()),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Scaled:
        config = dict(config)
        schedule = config["schedule"]
        config["schedule"] = (
            keras.optimizers.schedules.deserialize(schedule, custom_objects=custom_objects)
            if isinstance(schedule, dict)
            else float(schedule)
        )
        return cls(**config)


def inner_optimizer(optimizer: Any) -> Any:
    """The optimizer under a `LossScaleOptimizer`, or ``optimizer`` itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def learning_rate_of(optimizer: Any) -> float:
    """The learning rate the optimizer used at its last step (or will use)."""
    return float(keras.backend.get_value(optimizer.learning_rate))


def schedule_of(optimizer: Any) -> Any:
    # tf_keras keeps the schedule object in `_learning_rate` and offers no
    # public getter (`learning_rate` returns the current value instead).
    return getattr(inner_optimizer(optimizer), "_learning_rate", None)


def set_learning_rate_scale(optimizer: Any, factor: float) -> tuple[float, float]:
    """Multiplies the optimizer's learning rate by `factor`.

    A float rate is assigned; a `Scaled` schedule has its scale
    lowered (the training function reads it every step).

    Returns:
        The rate before and after (at the current step).

    Raises:
        ConfigError: When the rate is a schedule that cannot be scaled.
    """
    before = learning_rate_of(optimizer)
    schedule = schedule_of(optimizer)
    if isinstance(schedule, Scaled):
        schedule.scale.assign(schedule.scale * factor)
        after = before * factor
    elif isinstance(schedule, LearningRateSchedule):
        raise ConfigError(
            message(
                "The blow-up guard cannot lower the learning rate of a "
                f"{type(schedule).__name__} schedule",
                allowed="Wrap it in kerastrain.callbacks.Scaled(schedule) (compile_model does) "
                "or use a float rate",
            )
        )
    else:
        optimizer.learning_rate = before * factor
        after = learning_rate_of(optimizer)
    return before, after


class BlowupGuard(keras.callbacks.Callback):
    """On a NaN or infinite training loss, or non-finite weights: restore,
    lower the rate, go on; and say when training never got anywhere.

    As TF Model Garden's trainer recovery does, the guard keeps the last
    good state (the weights and the optimizer's variables at the end of the
    last epoch whose loss and variables were finite, or at the start), and
    when a batch ends with a non-finite loss, or an epoch ends with
    non-finite weights (a finite loss can hide them: a saturated output
    still gives one), it puts that state back, multiplies the learning rate
    by `lr_factor`, clears the epoch's running metrics and lets training go
    on. After `retries` recoveries it raises `TrainingDivergedError`.

    An epoch's logged metrics are only what the model it ends with earned:
    when no batch ran after the epoch's last recovery, its training metrics
    are logged as NaN (not the zeros of the cleared metrics), and when the
    weights were restored at the epoch's end, its validation metrics too.

    The guard keeps the weights the fit started from (`initial_weights`), so
    that `train_model` can tell whether a recovered model is any better than
    them: a recovery that only ever got back to the start has not trained.

    Args:
        retries: Recoveries allowed. Defaults to `3`.
        lr_factor: The learning-rate factor of each recovery. Defaults to `0.1`.

    Attributes:
        recoveries: One record per recovery: epoch and batch (1-based; batch
            None when found at an epoch's end: non-finite weights, or under
            parameter-server training, which is checked once per epoch), the
            loss seen, and the learning rate before and after.
        initial_weights: The model's weights when the fit began (after a
            restored backup), or None before it began.
    """

    #: Correct with several steps per execution (it sees the loss of each call).
    kerastrain_step_safe = True

    def __init__(self, retries: int = 3, lr_factor: float = 0.1):
        super().__init__()
        if retries < 0 or not 0 < lr_factor < 1:
            raise ConfigError(
                message(
                    "BlowupGuard needs retries >= 0 and 0 < lr_factor < 1",
                    received={"retries": retries, "lr_factor": lr_factor},
                )
            )
        self.retries = int(retries)
        self.lr_factor = float(lr_factor)
        self.recoveries: list[dict[str, Any]] = []
        self.initial_weights: list[Any] | None = None
        self._epoch = 0
        self._good: tuple[list[Any], list[Any]] | None = None
        self._batches_since_recovery = 0
        self._recovered_this_epoch = False
        self._per_batch = True
        self._supports_tf_logs = True

    def _variables(self) -> tuple[list[Any], list[Any]]:
        return list(self.model.weights), list(self.model.optimizer.variables)

    def _read(self) -> tuple[list[Any], list[Any]]:
        # Whole values: a model split over a DTensor mesh (model parallel) has
        # its weights and optimizer slots gathered from the devices.
        weights, opt_vars = self._variables()
        return meshes.read_values(weights), meshes.read_values(opt_vars)

    def _restore(self) -> None:
        weights, opt_vars = self._variables()
        saved_weights, saved_opt = self._good
        meshes.assign_values(weights, saved_weights)
        meshes.assign_values(opt_vars, saved_opt)

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        schedule = schedule_of(optimizer)
        if isinstance(schedule, LearningRateSchedule) and not isinstance(schedule, Scaled):
            raise ConfigError(
                message(
                    "BlowupGuard lowers the learning rate after a NaN loss, which a "
                    f"{type(schedule).__name__} schedule does not allow",
                    allowed="Wrap it in kerastrain.callbacks.Scaled(schedule), or use a float rate",
                )
            )
        if not getattr(inner_optimizer(optimizer), "_built", False):
            inner_optimizer(optimizer).build(self.model.trainable_variables)
        self.recoveries = []
        self.initial_weights = None
        self._good = None
        # Under parameter-server training the per-batch logs are remote values
        # that cannot be read without waiting: check each epoch's loss instead.
        self._per_batch = not isinstance(
            self.model.distribute_strategy, tf.distribute.experimental.ParameterServerStrategy
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._batches_since_recovery = 0
        self._recovered_this_epoch = False
        if self._good is None:  # after every on_train_begin (BackupAndRestore's restore)
            self._good = self._read()
            self.initial_weights = self._good[0]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._per_batch:  # parameter servers: `logs` is a remote value
            return
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(loss)
        if not math.isfinite(value):
            self._recover(batch, value)
            return
        self._batches_since_recovery += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        if self._recovered_this_epoch and self._batches_since_recovery == 0:
            # The cleared metrics hold nothing: no batch ran after the recovery.
            self._unmeasured(logs, validation=False)
            return
        loss = logs.get("loss")
        if loss is None:
            return
        value = float(loss)
        if not math.isfinite(value):
            if not self._per_batch:
                self._recover(None, value)
                self._unmeasured(logs, validation=True)
            return
        state = self._read()
        if not all(np.isfinite(v).all() for part in state for v in part if _is_float(v)):
            self._recover(None, value, cause="the weights became NaN or infinite")
            self._unmeasured(logs, validation=True)  # both were measured on the bad weights
            return
        self._good = state

    def _unmeasured(self, logs: dict, validation: bool) -> None:
        """Replaces the epoch's metrics of weights that were thrown away by NaN."""
        names = list(getattr(self.model, "metrics_names", None) or ["loss"])
        keys = names + ([f"val_{n}" for n in names] if validation else [])
        for key in keys:
            if key in logs:
                logs[key] = math.nan

    def _recover(self, batch: int | None, value: float, cause: str | None = None) -> None:
        where = f"epoch {self._epoch + 1}" + ("" if batch is None else f", batch {batch + 1}")
        what = cause or f"the training loss became {value}"
        if len(self.recoveries) >= self.retries:
            first = (
                self.recoveries[0]["lr_before"]
                if self.recoveries
                else learning_rate_of(self.model.optimizer)
            )
            raise TrainingDivergedError(
                f"{what[0].upper()}{what[1:]} at {where}"
                + (f" (the training loss was {value})" if cause else "")
                + f", after {len(self.recoveries)} recoveries (each restored the last good weights "
                f"and multiplied the learning rate by {self.lr_factor:g}: from {first:.3g} to "
                f"{learning_rate_of(self.model.optimizer):.3g}). Lower train.learning_rate, "
                "add train.clipnorm or warmup, or look for extreme values in the data."
            )
        self._restore()
        before, after = set_learning_rate_scale(self.model.optimizer, self.lr_factor)
        self.model.reset_metrics()
        self._batches_since_recovery = 0
        self._recovered_this_epoch = True
        self.recoveries.append(
            {
                "epoch": self._epoch + 1,
                "batch": None if batch is None else batch + 1,
                "loss": value,
                "lr_before": before,
                "lr_after": after,
            }
        )
        logger.warning(
            "%s at %s: restored the last good weights and lowered the learning rate "
            "from %.3g to %.3g (recovery %d of %d).",
            what[0].upper() + what[1:],
            where,
            before,
            after,
            len(self.recoveries),
            self.retries,
        )


def _is_float(value: Any) -> bool:
    return np.issubdtype(np.asarray(value).dtype, np.floating)
