"""The optimizer a `TrainConfig` describes, with its learning rate or schedule.

Schedules are configured in epochs (`TrainConfig.schedule_options`) and built
here in optimizer steps, from the steps an epoch has (`steps_per_epoch`).
Gradient accumulation (`accumulate_gradients`) replaces a compiled model's
training step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.callbacks.guard import Scaled
from kerastrain.config import TrainConfig
from kerastrain.config.train import is_schedule_object
from kerastrain.errors import ConfigError, config_error, message
from kerastrain.training import schedules

logger = logging.getLogger(__name__)

__all__ = [
    "make_optimizer",
    "make_learning_rate",
    "accumulate_gradients",
    "steps_per_epoch",
]

#: The tf_keras class of each optimizer that the config names
#: (`kerastrain.config.train.OPTIMIZERS`; a test keeps the two in step).
OPTIMIZER_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "nadam": keras.optimizers.Nadam,
}


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return max(1, round(epochs * steps_per_epoch))


def _decay_schedule(
    train: TrainConfig, peak: float, steps_per_epoch: int, warmup_steps: int
) -> Any:
    """The schedule after warmup, in steps, for a float peak rate."""
    opts: Any = train.schedule_options
    remaining = max(train.epochs - warmup_steps / steps_per_epoch, 1.0 / steps_per_epoch)
    steps = lambda epochs: _steps(epochs, steps_per_epoch)  # noqa: E731
    kind = "constant" if train.schedule == "auto" else train.schedule  # unresolved: constant
    if kind in ("constant", "plateau"):
        return schedules.Constant(peak)
    if kind == "step":
        return schedules.StepDecay(
            peak, steps(opts.step_size or max(1.0, remaining / 3)), opts.gamma
        )
    if kind == "multistep":
        bounds = opts.boundaries or [remaining / 2, remaining * 3 / 4]
        bound_steps = [steps(b) for b in bounds]
        if any(b <= a for a, b in zip(bound_steps, bound_steps[1:])):
            raise config_error(
                "train.schedule_options.boundaries",
                bounds,
                f"epochs at least one step apart ({steps_per_epoch} steps per epoch)",
            )
        values = opts.values or [peak * opts.gamma**i for i in range(len(bounds) + 1)]
        # PiecewiseConstantDecay keeps values[i] through the boundary step itself
        # (`step <= boundary`); the rate must change at the boundary's first update,
        # as `step` and PyTorch's MultiStepLR do, so it is given the step before.
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [b - 1 for b in bound_steps], [float(v) for v in values]
        )
    if kind == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            peak, steps(opts.decay_epochs), opts.decay_rate, staircase=opts.staircase
        )
    if kind == "polynomial":
        return keras.optimizers.schedules.PolynomialDecay(
            peak, steps(opts.decay_epochs or remaining), opts.end_learning_rate, opts.power
        )
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            peak, steps(opts.decay_epochs or remaining), opts.alpha
        )
    if kind == "cosine_restarts":
        first = opts.first_decay_epochs or remaining / (1 + opts.t_mul + opts.t_mul**2)
        return keras.optimizers.schedules.CosineDecayRestarts(
            peak, steps(first), t_mul=opts.t_mul, m_mul=opts.m_mul, alpha=opts.alpha
        )
    if kind == "onecycle":
        return schedules.OneCycle(
            peak,
            steps(opts.total_epochs or remaining),
            opts.pct_start,
            opts.div_factor,
            opts.final_div_factor,
        )
    if kind == "inverse_sqrt":
        timescale = (
            steps(opts.timescale_epochs)
            if opts.timescale_epochs
            else warmup_steps or steps_per_epoch
        )
        return schedules.InverseSquareRoot(peak, timescale)
    raise AssertionError(f"schedule {kind!r} has no builder")  # the config refuses it first


def make_learning_rate(train: TrainConfig, steps_per_epoch: int | None = None) -> Any:
    """The learning rate ``train`` describes: a float, or a schedule in steps.

    A constant rate without warmup (and `"plateau"`, which adjusts it) stays a
    float, so that the optimizer holds it in a variable that
    `ReduceLROnPlateau` and the blow-up guard can set.

    Args:
        train: `learning_rate`, `schedule`, `schedule_options` (epochs),
            `warmup`, `epochs`.
        steps_per_epoch: Optimizer steps per epoch, to turn epochs into
            steps. Defaults to `None` (enough only for a constant rate).

    Returns:
        A float or a tf_keras `LearningRateSchedule`.

    Raises:
        ConfigError: When the schedule needs `steps_per_epoch` and it is
            missing, or `learning_rate` is still `"find"`.

    Example:
        >>> lr = make_learning_rate(TrainConfig(schedule="cosine", epochs=10), steps_per_epoch=5)
        >>> round(schedules.value_at(lr, 25), 6)  # half way: half the peak
        0.0005
    """
    lr = train.learning_rate
    if lr == "find":
        raise ConfigError(
            message(
                "The learning rate 'find' must be resolved to a number before the "
                "optimizer is built",
                received={"train.learning_rate": lr},
                allowed="fit_pipeline does it, or call kerastrain.training.find_learning_rate first",
            )
        )
    warmup_options = train.warmup
    uses_steps = warmup_options.enabled or train.schedule not in ("constant", "plateau", "auto")
    if uses_steps and not steps_per_epoch:
        raise ConfigError(
            message(
                "The schedule is given in epochs and needs the number of steps per epoch",
                received={
                    "train.schedule": train.schedule,
                    "train.warmup.epochs": warmup_options.epochs,
                    "steps_per_epoch": steps_per_epoch,
                },
                allowed="Pass steps_per_epoch to compile_model",
            )
        )
    warmup = warmup_options.steps or (
        _steps(warmup_options.epochs, steps_per_epoch) if warmup_options.epochs > 0 else 0
    )
    if is_schedule_object(lr):
        base = lr
    elif not uses_steps:
        return float(lr)
    else:
        base = _decay_schedule(train, float(lr), steps_per_epoch, warmup)
    if warmup:
        return schedules.Warmup(
            base, warmup, warmup_options.start_learning_rate, warmup_options.method
        )
    return base


def make_optimizer(
    train: TrainConfig,
    learning_rate: Any = None,
    *,
    steps_per_epoch: int | None = None,
    mesh: Any = None,
) -> keras.optimizers.Optimizer:
    """The optimizer ``train`` describes.

    Args:
        train: `optimizer`, `optimizer_options`, `learning_rate`, `schedule`,
            `warmup`, `weight_decay`, `clipnorm`, `global_clipnorm`, `ema`.
        learning_rate: A float or a `LearningRateSchedule` used as is instead
            of `train`'s rate and schedule. Defaults to `None`.
        steps_per_epoch: Optimizer steps per epoch, to build schedules given in
            epochs. Defaults to `None`.
        mesh: A `dtensor.Mesh`: the optimizer of a model laid out on it
            (`strategy="model_parallel"`), whose slots take their weights'
            layouts. Defaults to `None`.

    Returns:
        A tf_keras optimizer (`weight_decay` is decoupled, as in AdamW). With
        the blow-up guard on, a schedule is wrapped in `kerastrain.callbacks.Scaled`.

    Example:
        >>> make_optimizer(TrainConfig(optimizer="sgd",
        ...                optimizer_options={"momentum": 0.9, "nesterov": True})).nesterov
        True
    """
    cls = OPTIMIZER_CLASSES[train.optimizer]
    kwargs = dict(train.optimizer_options)
    if train.weight_decay:
        kwargs["weight_decay"] = train.weight_decay
    elif train.optimizer == "adamw":
        kwargs["weight_decay"] = 0.0  # AdamW's own default (0.004) would surprise
    for key in ("clipnorm", "global_clipnorm"):
        if getattr(train, key) is not None:
            kwargs[key] = getattr(train, key)
    if train.ema is not None:
        kwargs.update(use_ema=True, ema_momentum=train.ema.momentum)
    if mesh is not None:
        kwargs["mesh"] = mesh
    lr = make_learning_rate(train, steps_per_epoch) if learning_rate is None else learning_rate
    if train.blowup_guard is not None and isinstance(lr, schedules.LearningRateSchedule):
        lr = Scaled(lr)
    return cls(learning_rate=lr, **kwargs)


def accumulate_gradients(model: keras.Model, steps: int) -> None:
    """Makes each training step of ``model`` one update from `steps` micro-batches.

    tf_keras optimizers cannot accumulate gradients. This replaces the
    model's `train_step` (on this instance only) by one that splits each
    incoming batch into `steps` micro-batches, runs them one after the other
    (a `tf.while_loop`, so only one micro-batch's activations are alive),
    sums their gradients weighted by their share of the batch, and applies
    the sum once: the same update as the whole batch in one piece, up to
    float rounding, with the memory of one micro-batch. Metrics and the loss
    are accumulated over the micro-batches as over the whole batch. Feed
    batches `steps` times the micro-batch size (`kerastrain.training.run` does).
    Layers that look across the batch are the exception: BatchNormalization
    normalizes each micro-batch by its own statistics (and updates its moving
    averages once per micro-batch), as it would with that smaller batch.

    Args:
        model: A compiled tf_keras model.
        steps: Micro-batches per update; 1 puts the ordinary step back.

    Raises:
        ConfigError: For `steps` below 1.
    """
    if steps < 1:
        raise config_error("train.gradient_accumulation", steps, ">= 1")
    if "train_step" in vars(model):
        del model.train_step
    if steps > 1:
        model.train_step = _accumulating_step(model, steps)
        model.train_function = None


def _accumulating_step(model: keras.Model, steps: int) -> Callable[[Any], dict[str, Any]]:
    def take(structure: Any, start: tf.Tensor, end: tf.Tensor) -> Any:
        if structure is None:
            return None
        return tf.nest.map_structure(lambda t: t[start:end], structure)

    def train_step(data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = model.trainable_variables
        optimizer = model.optimizer
        scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        rows = tf.shape(tf.nest.flatten(x)[0])[0]
        parts = tf.minimum(tf.constant(steps, rows.dtype), rows)
        used = [False] * len(variables)

        def body(i: tf.Tensor, *sums: tf.Tensor) -> tuple[tf.Tensor, ...]:
            start, end = i * rows // parts, (i + 1) * rows // parts
            xi, yi, wi = take(x, start, end), take(y, start, end), take(sample_weight, start, end)
            with tf.GradientTape() as tape:
                y_pred = model(xi, training=True)
                loss = model.compute_loss(xi, yi, y_pred, wi)
                target = optimizer.get_scaled_loss(loss) if scaled else loss
            grads = tape.gradient(target, variables)
            model.compute_metrics(xi, yi, y_pred, wi)
            share = tf.cast(end - start, tf.float32) / tf.cast(rows, tf.float32)
            out = []
            for k, (total, grad) in enumerate(zip(sums, grads)):
                if grad is None:
                    out.append(total)
                    continue
                used[k] = True
                out.append(
                    total
                    + tf.cast(share, total.dtype) * tf.cast(tf.convert_to_tensor(grad), total.dtype)
                )
            return (i + 1, *out)

        zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
        start = (tf.constant(0, rows.dtype), *zeros)
        _, *sums = tf.while_loop(lambda i, *_: i < parts, body, start, parallel_iterations=1)
        pairs = [(g, v) for g, v, u in zip(sums, variables, used) if u]
        grads = [g for g, _ in pairs]
        if scaled:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
        return model.get_metrics_result()

    return train_step


def steps_per_epoch(examples: int, global_batch: int) -> int:
    """Optimizer steps in one pass over `examples` rows (the last batch may be short)."""
    return max(1, math.ceil(examples / global_batch))
