"""The learning-rate range test ("LR finder"), as fastai and Lightning offer it.

The learning rate grows geometrically from a tiny to a large value over a
short run while the loss of each step is recorded; the run stops once the
loss diverges, the model and optimizer are put back as they were, and a rate
is suggested from the loss curve.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.callbacks.guard import inner_optimizer, learning_rate_of, schedule_of
from kerastrain.errors import ConfigError, config_error, message, one_of
from kerastrain.figures import figure

logger = logging.getLogger(__name__)

__all__ = [
    "LRFinder",
    "LRRangeResult",
    "lr_range_test",
    "suggest_learning_rate",
    "plot_lr_range",
    "smooth",
]

RULES = ("min_loss", "steepest")


def smooth(losses: Sequence[float], beta: float = 0.98) -> np.ndarray:
    """Exponentially smoothed losses with bias correction (fastai's)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return np.asarray(out, dtype=np.float64)


def suggest_learning_rate(
    rates: Sequence[float], losses: Sequence[float], rule: str = "min_loss", beta: float = 0.98
) -> float:
    """A learning rate from a range test's curve.

    Args:
        rates: The learning rates tried, increasing.
        losses: The loss at each rate.
        rule: `"min_loss"`: a tenth of the rate at the lowest smoothed loss
            (fastai's classic rule); `"steepest"`: the rate where the smoothed
            loss falls fastest against log(rate), before its minimum.
            Defaults to `"min_loss"`.
        beta: Smoothing of the losses. Defaults to `0.98`.

    Returns:
        The suggested rate.

    Raises:
        ConfigError: For an unknown rule or too few finite points.

    Example:
        >>> rates = np.geomspace(1e-5, 1, 51)
        >>> losses = 1 + (np.log10(rates) + 2) ** 2   # lowest at 1e-2
        >>> float(suggest_learning_rate(rates, losses, beta=0.0))  # doctest: +ELLIPSIS
        0.001...
    """
    if rule not in RULES:
        raise config_error("rule", rule, one_of(RULES), RULES)
    rates = np.asarray(rates, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    rates, losses = rates[finite], losses[finite]
    if len(rates) < 5:
        raise ConfigError(
            message(
                f"The LR range test recorded {len(rates)} finite losses; it needs at least 5",
                allowed="Lower lr_finder.start_learning_rate or raise lr_finder.steps",
            )
        )
    smoothed = smooth(losses, beta)
    lowest = int(np.argmin(smoothed))
    if rule == "min_loss":
        return float(rates[lowest] / 10.0)
    skip = max(1, len(rates) // 10)
    window = slice(skip, max(lowest, skip + 2))
    slopes = np.gradient(smoothed, np.log(rates))[window]
    return float(rates[window][int(np.argmin(slopes))])


@dataclasses.dataclass
class LRRangeResult:
    """What a range test saw and suggests.

    Attributes:
        learning_rates: The rates tried.
        losses: The loss of each step.
        suggestion: The suggested rate.
        rule: The rule that suggested it.
        stopped_early: Whether the loss diverged before the last step.
    """

    learning_rates: list[float]
    losses: list[float]
    suggestion: float
    rule: str
    stopped_early: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LRFinder(keras.callbacks.Callback):
    """Sweeps the learning rate geometrically over `steps` steps of a fit.

    Each step's loss is read from the running mean Keras logs (exact when the
    batches have equal sizes, as `lr_range_test` arranges). Training stops
    when the smoothed loss exceeds `diverge` times its lowest value or is not
    finite, or after `steps` steps. When training ends the weights, the
    optimizer's variables and its learning rate are put back as they were.

    Args:
        start_learning_rate: The first rate. Defaults to `1e-7`.
        end_learning_rate: The rate of the last step. Defaults to `10.0`.
        steps: Steps of the sweep. Defaults to `100`.
        diverge: The divergence factor. Defaults to `4.0`.
        beta: Loss smoothing. Defaults to `0.98`.

    Attributes:
        learning_rates: The rates tried so far.
        losses: Their losses.
        stopped_early: Whether the loss diverged.

    Raises:
        ConfigError: At the start of training when the optimizer's rate is a
            schedule (the sweep must set it).
    """

    #: With several steps per execution the rate changes once per call.
    kerastrain_step_safe = True

    def __init__(
        self,
        start_learning_rate: float = 1e-7,
        end_learning_rate: float = 10.0,
        steps: int = 100,
        diverge: float = 4.0,
        beta: float = 0.98,
    ):
        super().__init__()
        if not 0 < start_learning_rate < end_learning_rate or steps < 2:
            raise ConfigError(
                message(
                    "LRFinder needs 0 < start_learning_rate < end_learning_rate and steps >= 2",
                    received={
                        "start_learning_rate": start_learning_rate,
                        "end_learning_rate": end_learning_rate,
                        "steps": steps,
                    },
                )
            )
        self.start_learning_rate = float(start_learning_rate)
        self.end_learning_rate = float(end_learning_rate)
        self.steps = int(steps)
        self.diverge = float(diverge)
        self.beta = float(beta)
        self.learning_rates: list[float] = []
        self.losses: list[float] = []
        self.stopped_early = False
        self._supports_tf_logs = True

    def rate_at(self, step: int) -> float:
        """The rate of sweep step `step` (0-based)."""
        ratio = self.end_learning_rate / self.start_learning_rate
        return self.start_learning_rate * ratio ** (min(step, self.steps - 1) / (self.steps - 1))

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if isinstance(schedule_of(optimizer), keras.optimizers.schedules.LearningRateSchedule):
            raise ConfigError(
                message(
                    "The LR range test sets the optimizer's learning rate, which needs a float "
                    "learning rate, not a schedule",
                    received={"learning_rate": type(schedule_of(optimizer)).__name__},
                    allowed="Compile the model with a float learning rate",
                )
            )
        if not getattr(inner_optimizer(optimizer), "_built", False):
            inner_optimizer(optimizer).build(self.model.trainable_variables)
        self._saved = (
            keras.backend.batch_get_value(self.model.weights),
            keras.backend.batch_get_value(list(optimizer.variables)),
            learning_rate_of(optimizer),
        )
        self.learning_rates, self.losses, self.stopped_early = [], [], False
        self._step, self._best = 0, math.inf

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._seen, self._mean = 0, 0.0  # Keras's running mean restarts

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._rate = self.rate_at(self._step)
        self.model.optimizer.learning_rate = self._rate

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        mean = float((logs or {}).get("loss", math.nan))
        seen = batch + 1
        loss = (seen * mean - self._seen * self._mean) / max(seen - self._seen, 1)
        self._seen, self._mean = seen, mean
        self.learning_rates.append(self._rate)
        self.losses.append(loss)
        self._step += 1
        smoothed = smooth(self.losses, self.beta)[-1]
        self._best = min(self._best, smoothed)
        if not math.isfinite(loss) or smoothed > self.diverge * self._best:
            self.stopped_early = True
            self.model.stop_training = True
        elif self._step >= self.steps:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        weights, opt_values, rate = self._saved
        optimizer = self.model.optimizer
        keras.backend.batch_set_value(list(zip(self.model.weights, weights)))
        keras.backend.batch_set_value(list(zip(list(optimizer.variables), opt_values)))
        optimizer.learning_rate = rate


def _equal_batches(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` repeated, with every batch as large as the first."""
    first = next(iter(dataset))
    size = int(tf.shape(tf.nest.flatten(first)[0])[0])
    return dataset.repeat().unbatch().batch(size, drop_remainder=True)


def lr_range_test(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    start_learning_rate: float = 1e-7,
    end_learning_rate: float = 10.0,
    steps: int = 100,
    rule: str = "min_loss",
    diverge: float = 4.0,
) -> LRRangeResult:
    """Runs the range test on a compiled model and suggests a learning rate.

    The model and its optimizer are left as they were.

    Args:
        model: A tf_keras model compiled with a float learning rate.
        dataset: Batches of `(x, y)` (repeated as needed).
        start_learning_rate: The first rate. Defaults to `1e-7`.
        end_learning_rate: The last rate. Defaults to `10.0`.
        steps: Steps of the sweep. Defaults to `100`.
        rule: `"min_loss"` or `"steepest"` (see `suggest_learning_rate`).
            Defaults to `"min_loss"`.
        diverge: Stop once the smoothed loss exceeds this multiple of its
            lowest value. Defaults to `4.0`.

    Returns:
        The rates, losses and the suggestion.

    Example:
        >>> result = lr_range_test(model, train_ds, steps=60)  # doctest: +SKIP
        >>> model.optimizer.learning_rate.assign(result.suggestion)  # doctest: +SKIP
    """
    finder = LRFinder(start_learning_rate, end_learning_rate, steps, diverge)
    model.fit(
        _equal_batches(dataset), epochs=1, steps_per_epoch=steps, callbacks=[finder], verbose=0
    )
    suggestion = suggest_learning_rate(finder.learning_rates, finder.losses, rule)
    logger.info(
        "LR range test: %d steps from %.2g to %.2g%s; suggests %.3g (%s rule).",
        len(finder.losses),
        start_learning_rate,
        finder.learning_rates[-1],
        " (stopped: the loss diverged)" if finder.stopped_early else "",
        suggestion,
        rule,
    )
    return LRRangeResult(
        [float(r) for r in finder.learning_rates],
        [float(v) for v in finder.losses],
        suggestion,
        rule,
        finder.stopped_early,
    )


def plot_lr_range(result: LRRangeResult, path: str | os.PathLike) -> Path:
    """Plots loss against learning rate (log scale), marking the suggestion."""
    path = Path(path)
    with figure(path, figsize=(6, 4)) as (_, ax):
        ax.plot(result.learning_rates, result.losses, alpha=0.35, label="loss")
        ax.plot(result.learning_rates, smooth(result.losses), label="smoothed loss")
        ax.axvline(
            result.suggestion,
            color="tab:red",
            linestyle="--",
            label=f"suggestion {result.suggestion:.2g} ({result.rule})",
        )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        smoothed = [v for v in smooth(result.losses) if math.isfinite(v)]
        lowest = min([v for v in result.losses if math.isfinite(v)] + smoothed, default=None)
        if smoothed and lowest is not None and lowest > 0:
            ax.set_ylim(lowest * 0.9, min(max(smoothed), 4 * min(smoothed)) * 1.1)
        ax.legend()
        ax.grid(alpha=0.3)
    return path
