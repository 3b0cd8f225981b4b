"""The learning rate, examples per second and epoch time, logged into the history."""

from __future__ import annotations

import time

from kerastrain._keras import keras
from kerastrain.callbacks.guard import learning_rate_of

__all__ = ["LearningRateLogger", "ThroughputLogger"]


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate`, the rate of each epoch's last step, to the epoch
    logs (so to the `History`, TensorBoard and the report; the name Keras 3
    uses, and that `kerastrain.tracking` reads).

    Put it before `History`-reading callbacks; `fit` adds `History` last.
    """

    def __init__(self) -> None:
        super().__init__()
        self._supports_tf_logs = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = learning_rate_of(self.model.optimizer)


class ThroughputLogger(keras.callbacks.Callback):
    """Adds `epoch_time` (seconds, validation included) and
    `examples_per_second` (training examples over training time, validation
    excluded) to the epoch logs.

    Args:
        examples_per_epoch: Training examples in one epoch. Defaults to
            `None`: then `steps_per_second` is logged instead.
    """

    def __init__(self, examples_per_epoch: int | None = None):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self._start = 0.0
        self._train_end: float | None = None
        self._supports_tf_logs = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        train_time = max((self._train_end or now) - self._start, 1e-9)
        if logs is None:
            return
        logs["epoch_time"] = now - self._start
        if self.examples_per_epoch:
            logs["examples_per_second"] = self.examples_per_epoch / train_time
        else:
            logs["steps_per_second"] = (self.params or {}).get("steps", 0) / train_time
