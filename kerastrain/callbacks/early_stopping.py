"""Early stopping that says why it stopped, with best-weight restore."""

from __future__ import annotations

import logging
import math
from typing import Any

from kerastrain._keras import keras
from kerastrain.errors import ConfigError, message

logger = logging.getLogger(__name__)

__all__ = ["EarlyStopping", "monitor_mode", "MAXIMIZED"]

#: Substrings of the names of quantities that improve upward.
MAXIMIZED = ("acc", "auc", "precision", "recall", "f1")
#: The values of `mode`.
MODES = ("auto", "min", "max")


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``"max"`` for accuracy-like quantities (acc, auc, precision, recall,
    f1), ``"min"`` otherwise, unless `mode` says which.

    Example:
        >>> monitor_mode("val_accuracy"), monitor_mode("val_loss")
        ('max', 'min')
    """
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(key in name for key in MAXIMIZED) else "min"


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when `monitor` stops improving, and states why.

    The verdict is kept in one method, `evaluate_stopping_criteria`, which
    returns whether to stop and the reason in words (as Lightning's
    `EarlyStopping` does). With `restore_best_weights`, the weights of the
    best epoch are put back when training ends (after the optimizer has
    finalized its variables, so that an EMA run ends on the best averaged
    weights), unless the best epoch was the last.

    It stops at the same epoch and keeps the same best epoch as tf_keras's
    `EarlyStopping` given the same logs and options, except for three
    deliberate differences (checked in `tests/conformance/`):

    - A NaN or infinite value stops training at once (tf_keras counts it as
      one more epoch without improvement and waits out its patience). Such a
      value means broken weights, which no later epoch repairs; the best
      weights are restored.
    - During the first `start_from_epoch` epochs no patience is used up, but
      the best value and its weights are still tracked (tf_keras ignores those
      epochs entirely). The warm-up protects a run from being stopped, not
      from keeping its best weights: if an early epoch is the best one, those
      weights are the ones restored.
    - `mode="auto"` maximizes names containing acc, auc, precision, recall or
      f1 (`monitor_mode`); tf_keras maximizes only names ending in acc,
      accuracy or auc, so it would minimize `val_precision` or `val_f1`.

    Args:
        monitor: The logged quantity watched. Defaults to `"val_loss"`.
        patience: Epochs without improvement before stopping. Defaults to `5`.
        min_delta: The smallest change that counts as an improvement.
            Defaults to `0.0`.
        mode: `"min"`, `"max"`, or `"auto"` (from the name; see
            `monitor_mode`). Defaults to `"auto"`.
        restore_best_weights: End with the best epoch's weights.
            Defaults to `True`.
        start_from_epoch: Epochs (0-based) during which no patience is used
            up; the best value is still tracked. Defaults to `0`.
        baseline: A value the monitored quantity must beat (by more than
            `min_delta`), as tf_keras's `baseline`: until it does, every
            epoch uses up patience, even one that improves on the best so far,
            and training stops at the first epoch without improvement once
            patience is spent. Defaults to `None` (no baseline).

    Attributes:
        best: The best value seen.
        best_epoch: Its epoch (0-based), or None.
        stopped_epoch: The epoch (0-based) training stopped after, or None.
        stop_reason: Why training stopped early, or None.
        restored: Whether the best weights were put back.

    Raises:
        ConfigError: For an unknown `mode` or a negative `patience` (a
            `ValueError` too).

    Example:
        >>> stop = EarlyStopping(patience=2)
        >>> model.fit(x, y, validation_split=0.2, callbacks=[stop])  # doctest: +SKIP
        >>> stop.stop_reason  # doctest: +SKIP
        'val_loss did not improve by more than 0 for 2 epochs (best 0.31 at epoch 4)'
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
        start_from_epoch: int = 0,
        baseline: float | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(
                message(
                    "Argument `mode` must be 'auto', 'min' or 'max'",
                    received={"mode": mode},
                    candidates=MODES,
                )
            )
        if patience < 0:
            raise ConfigError(
                message("Argument `patience` must be >= 0", received={"patience": patience})
            )
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = monitor_mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.baseline = None if baseline is None else float(baseline)
        self._supports_tf_logs = True
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[Any] | None = None
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.last_epoch: int | None = None
        self.restored = False
        self._warned = False

    def _beats(self, current: float, reference: float) -> bool:
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def is_improvement(self, current: float) -> bool:
        """Whether `current` beats the best by more than `min_delta`."""
        return self._beats(current, self.best)

    def beats_baseline(self, current: float) -> bool:
        """Whether `current` beats `baseline` by more than `min_delta` (True
        without a baseline)."""
        return self.baseline is None or self._beats(current, self.baseline)

    def evaluate_stopping_criteria(self, current: float, epoch: int) -> tuple[bool, str | None]:
        """Updates the best value and patience with one epoch's value.

        Args:
            current: The monitored value.
            epoch: The epoch (0-based).

        Returns:
            Whether to stop, and why (None when going on).
        """
        if not math.isfinite(current):
            return True, f"{self.monitor} became {current} at epoch {epoch + 1}"
        improved = self.is_improvement(current)
        if improved:
            self.best, self.best_epoch = current, epoch
        if epoch < self.start_from_epoch:
            return False, None
        if improved and self.beats_baseline(current):
            self.wait = 0
            return False, None
        self.wait += 1
        if improved or self.wait < self.patience:
            return False, None
        best = (
            "n/a" if self.best_epoch is None else f"{self.best:.4g} at epoch {self.best_epoch + 1}"
        )
        if not self.beats_baseline(self.best):
            return True, (
                f"{self.monitor} did not beat the baseline {self.baseline:g} by more than "
                f"{self.min_delta:g} in {self.wait} epochs (best {best})"
            )
        return True, (
            f"{self.monitor} did not improve by more than {self.min_delta:g} for "
            f"{self.wait} epochs (best {best})"
        )

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            if not self._warned:
                logger.warning(
                    "Early stopping watches %r, which is not logged; logged: %s.",
                    self.monitor,
                    ", ".join(sorted(logs or {})),
                )
                self._warned = True
            return
        current = float(current)
        self.last_epoch = epoch
        stop, reason = self.evaluate_stopping_criteria(current, epoch)
        if self.best_epoch == epoch and self.restore_best_weights:
            self.best_weights = self.model.get_weights()
        if stop:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            self.stop_reason = reason

    def on_train_end(self, logs: dict | None = None) -> None:
        if (
            self.restore_best_weights
            and self.best_weights is not None
            and self.best_epoch != self.last_epoch
        ):
            self.model.set_weights(self.best_weights)
            self.restored = True
            logger.info(
                "Early stopping restored the weights of epoch %d (%s %.4g).",
                self.best_epoch + 1,
                self.monitor,
                self.best,
            )

    def summary(self, epochs: int, first: int = 0) -> str:
        """Why training ended, in one sentence, for the history and report.

        Args:
            epochs: The epochs asked for.
            first: The fit's first epoch (0-based); epochs are counted from
                it, so that a phase that continues a model (fine-tuning)
                counts its own. Defaults to `0`.
        """
        if self.stopped_epoch is not None:
            text = (
                f"early stopping after epoch {self.stopped_epoch + 1 - first}: {self.stop_reason}"
            )
        else:
            text = f"completed all {epochs} epochs"
        if self.restored:
            text += f"; weights restored from epoch {self.best_epoch + 1 - first}"
        return text
