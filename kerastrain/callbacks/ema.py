"""Validation and checkpoints on the exponential moving average of the weights."""

from __future__ import annotations

from typing import Any

from kerastrain._keras import keras
from kerastrain.callbacks.guard import inner_optimizer
from kerastrain.errors import ConfigError, message

__all__ = ["SwapEMAWeights"]


class SwapEMAWeights(keras.callbacks.Callback):
    """Puts the optimizer's moving-average weights in the model for validation
    and for the callbacks that run after this one at the end of each epoch.

    tf_keras's optimizer with `use_ema=True` keeps the averages and writes
    them into the model only when `fit` ends (`finalize_variable_values`).
    Without this callback, validation, early stopping and checkpoints judge
    the raw weights while the averaged ones are exported. This callback (as
    Keras 3's callback of the same name) swaps the averages in around each
    validation, and, with `swap_on_epoch`, again at the end of each epoch for
    the callbacks listed after it (early stopping, checkpoints); the raw
    weights come back at the start of the next epoch. Callbacks listed before
    it (`BackupAndRestore`, the blow-up guard) see the raw weights. Only the
    public `finalize_variable_values` is used to read the averages.

    Args:
        swap_on_epoch: Also swap at the end of each epoch. Defaults to `True`.

    Raises:
        ConfigError: At the start of training, when the optimizer does not
            keep averages (`use_ema=False`).
    """

    def __init__(self, swap_on_epoch: bool = True):
        super().__init__()
        self.swap_on_epoch = swap_on_epoch
        self._stash: list[Any] | None = None
        self._supports_tf_logs = True

    def _built(self) -> bool:
        return bool(getattr(inner_optimizer(self.model.optimizer), "_built", False))

    def swap_in(self) -> None:
        """Moves the raw weights aside and puts the averages in the model."""
        if self._stash is not None or not self._built():
            return
        variables = self.model.trainable_variables
        self._stash = keras.backend.batch_get_value(variables)
        self.model.optimizer.finalize_variable_values(variables)

    def swap_out(self) -> None:
        """Puts the raw weights back."""
        if self._stash is None:
            return
        keras.backend.batch_set_value(list(zip(self.model.trainable_variables, self._stash)))
        self._stash = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not getattr(self.model.optimizer, "use_ema", False):
            raise ConfigError(
                message(
                    "SwapEMAWeights needs an optimizer that keeps moving averages",
                    received={"use_ema": getattr(self.model.optimizer, "use_ema", None)},
                    allowed="Build the optimizer with use_ema=True (train.ema=True)",
                )
            )
        self._stash = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.swap_in()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.swap_out()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.swap_on_epoch:
            self.swap_in()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.swap_out()

    def on_train_end(self, logs: dict | None = None) -> None:
        # fit has already written the final averages into the model.
        self._stash = None
