"""Evaluation options: ``fit_pipeline(evaluate={...})``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from kerastrain.config.base import Section
from kerastrain.errors import config_error

__all__ = ["EvaluateConfig", "THRESHOLD_RULES"]

#: What a binary decision threshold can be chosen to maximize.
THRESHOLD_RULES = ("f1", "balanced_accuracy")


@dataclasses.dataclass
class EvaluateConfig(Section):
    """How the trained model is scored.

    Attributes:
        threshold: For binary tasks, the decision threshold on the positive
            class's probability: `"f1"` or `"balanced_accuracy"` picks the
            threshold that maximizes it on the validation split, a number in
            (0, 1) is used as given. The metrics at that threshold are reported
            beside those at 0.5 (`metrics["val_at_threshold"]`,
            `metrics["test_at_threshold"]`), and the threshold is written to the
            model card and `metrics.json`. Refused for other tasks.
            Defaults to `None` (0.5 only).
    """

    _path: ClassVar[str] = "evaluate"

    threshold: Literal["f1", "balanced_accuracy"] | float | None = None

    def validate(self) -> None:
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise config_error(
                "evaluate.threshold",
                self.threshold,
                "'f1', 'balanced_accuracy', or a number in (0, 1)",
                THRESHOLD_RULES,
            )
