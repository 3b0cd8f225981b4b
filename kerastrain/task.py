"""The task a model answers: binary or multi-class classification, or regression.

Data validation decides it from the labels; every stage after it (the
model's head, the loss, the metrics, the export checks) reads it from here.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["Task"]


@dataclasses.dataclass(frozen=True)
class Task:
    """What the labels ask of the model.

    Attributes:
        kind: `"binary"`, `"multiclass"` or `"regression"`.
        num_classes: Number of classes (1 for regression).
        class_names: Names of the classes, index by index, when known.
        soft_labels: The training batches carry mixed labels (mixup,
            cutmix): multi-class labels are fed one-hot and the loss is the
            categorical one.
    """

    kind: Literal["binary", "multiclass", "regression"]
    num_classes: int = 1
    class_names: tuple[str, ...] | None = None
    soft_labels: bool = False

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    @property
    def output_units(self) -> int:
        return self.num_classes if self.kind == "multiclass" else 1

    @property
    def output_activation(self) -> str:
        return {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}[self.kind]
