"""Where the training time went: the wall time to each accuracy milestone.

The validation curve against the time of the epochs (the ``epoch_time``
log, validation included), so that a user sees how soon the model was good
enough, not only how fast each epoch ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from kerastrain.training.execution import Decision

__all__ = ["MILESTONES", "accuracy_milestones"]

#: The accuracies whose first crossing is reported.
MILESTONES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


def accuracy_milestones(
    history: Mapping[str, Sequence[float]], milestones: Sequence[float] = MILESTONES
) -> Decision | None:
    """The seconds and epoch at which validation accuracy first reached each milestone.

    Args:
        history: The fit's history with `epoch_time` and `val_accuracy` (or
            `accuracy` when there was no validation split).
        milestones: The accuracies reported. Defaults to `MILESTONES`.

    Returns:
        A decision whose value maps each milestone passed to
        `{"seconds": ..., "epoch": ...}` (seconds of the epochs so far, the
        epoch that crossed it included), and whose reason says the same in
        words; None when the history has no accuracy or no epoch times.

    Example:
        >>> accuracy_milestones({"epoch_time": [2.0, 2.0], "val_accuracy": [0.85, 0.92]}).value
        {0.5: {'seconds': 2.0, 'epoch': 1}, 0.8: {'seconds': 2.0, 'epoch': 1}, 0.9: {'seconds': 4.0, 'epoch': 2}}
    """  # noqa: E501
    name = "val_accuracy" if "val_accuracy" in history else "accuracy"
    curve, times = history.get(name), history.get("epoch_time")
    if not curve or not times or len(times) != len(curve):
        return None
    passed: dict[float, dict[str, float | int]] = {}
    elapsed = 0.0
    for epoch, (accuracy, seconds) in enumerate(zip(curve, times), start=1):
        elapsed += seconds
        if not math.isfinite(accuracy):
            continue
        for milestone in milestones:
            if milestone not in passed and accuracy >= milestone:
                passed[milestone] = {"seconds": round(elapsed, 3), "epoch": epoch}
    where = "validation" if name == "val_accuracy" else "training"
    if passed:
        steps = "; ".join(
            f"{m:g} after {p['seconds']:.1f} s (epoch {p['epoch']})" for m, p in passed.items()
        )
        reason = f"{where} accuracy first reached {steps}, in seconds of training epochs"
    else:
        reason = f"{where} accuracy reached none of {', '.join(f'{m:g}' for m in milestones)}"
    return Decision(passed, f"{reason}; best {max(curve):.4f}")
