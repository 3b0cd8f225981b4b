"""`AdaptiveAugmentation`: moves the augmentation magnitude after each epoch
from what the learning curves show (``data_options.augment="auto"``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.evaluation import diagnose

logger = logging.getLogger(__name__)

__all__ = ["AdaptiveAugmentation", "next_magnitude"]

KEY = "augment_magnitude"
#: The gap must grow by this share of the validation loss to count.
GROWTH = 0.01


def next_magnitude(
    history: Mapping[str, Sequence[float]], current: float, policy: Mapping[str, Any]
) -> tuple[float, str]:
    """The magnitude of the next epoch, and why.

    Down a `step` (to at least 0) when the learning-curve diagnosis
    (`kerastrain.evaluation.diagnose`) finds under-fitting. Up a `step` (to
    at most `max_magnitude`) on over-fitting: the validation minus training
    loss gap is positive and grew in each of the last `patience` epochs, by
    more than 1% of the validation loss in all, or the diagnosis finds
    over-fitting. Otherwise unchanged. A pure function of the history, so a
    resumed fit recomputes the value it stopped at.

    Args:
        history: Per-epoch `loss` and `val_loss` so far.
        current: The magnitude of the epoch just ended.
        policy: The parsed policy (`kerastrain.config.adaptive.parse_auto`).
    """
    train = [float(v) for v in history.get("loss", [])]
    val = [float(v) for v in history.get("val_loss", [])]
    if not train or len(val) != len(train):
        return current, "no validation loss to compare with"
    patience, step = policy["patience"], policy["step"]
    kinds = {f.kind for f in diagnose({"loss": train, "val_loss": val})}
    if "underfitting" in kinds:
        return max(0.0, round(current - step, 6)), "the learning curves show under-fitting"
    gaps = [v - t for t, v in zip(train, val)]
    growing = (
        len(gaps) > patience
        and gaps[-1] > 0
        and all(gaps[-i] > gaps[-i - 1] for i in range(1, patience + 1))
        and gaps[-1] - gaps[-patience - 1] > GROWTH * abs(val[-1])
    )
    if growing or "overfitting" in kinds:
        why = (
            f"the validation-training loss gap grew for {patience} epochs "
            f"({gaps[-patience - 1]:.4g} to {gaps[-1]:.4g})"
            if growing
            else "the learning curves show over-fitting"
        )
        return min(policy["max_magnitude"], round(current + step, 6)), why
    return current, "no over- or under-fitting"


class AdaptiveAugmentation(keras.callbacks.Callback):
    """Records the magnitude each epoch trained with (`augment_magnitude` in
    the logs) and sets the next epoch's (`next_magnitude`).

    Put it before the callbacks that record the logs (the history backup),
    so that they record the magnitude too. `restore` brings a resumed fit's
    magnitude back from the records of its earlier epochs.

    Args:
        variable: The magnitude's variable, read by the augmentation.
        policy: The parsed policy.
    """

    def __init__(self, variable: tf.Variable, policy: Mapping[str, Any]):
        super().__init__()
        self.variable = variable
        self.policy = dict(policy)
        self.history: dict[str, list[float]] = {"loss": [], "val_loss": []}
        self._supports_tf_logs = True

    def restore(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Replays the records of an interrupted fit's epochs (`epoch`, then
        the logs): the magnitude goes back to where that fit left it."""
        self.history = {"loss": [], "val_loss": []}
        value = float(self.policy["initial"])
        for record in sorted(records, key=lambda r: r["epoch"]):
            used = float(record.get(KEY, value))
            for key in self.history:
                self.history[key].append(float(record.get(key, math.nan)))
            value, _ = next_magnitude(self.history, used, self.policy)
        self.variable.assign(value)
        if records:
            logger.info("Augmentation magnitude restored to %.2f from the backup.", value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        used = float(self.variable.numpy())
        logs[KEY] = used
        for key in self.history:
            value = logs.get(key)
            self.history[key].append(math.nan if value is None else float(value))
        value, why = next_magnitude(self.history, used, self.policy)
        if value != used:
            logger.info(
                "Epoch %d: augmentation magnitude %.2f -> %.2f (%s).", epoch + 1, used, value, why
            )
        self.variable.assign(value)
