"""Data options: ``fit_pipeline(data_options={...})``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from kerastrain.config.base import Section, config_error, option

Task = Literal["auto", "binary", "multiclass", "regression"]


@dataclasses.dataclass
class DataConfig(Section):
    """How the data is read, checked, split and fed.

    Attributes:
        target: The label column when the data is a DataFrame or a CSV file.
            Defaults to `None` (arrays and datasets carry their labels).
        task: `"binary"`, `"multiclass"`, `"regression"`, or `"auto"` to infer
            it from the labels (integers with few distinct values are classes).
            Defaults to `"auto"`.
        num_classes: The number of classes, when the labels do not show all of
            them. Defaults to `None` (the largest label plus one).
        validation_split: Fraction of the rows held out for validation (early
            stopping, tuning). Defaults to `0.15`.
        test_split: Fraction of the rows held out for the final test, never
            seen in training or tuning. Defaults to `0.15`.
        stratify: Keep each class's share equal across splits (classification
            only). Defaults to `True`.
        batch_size: Alias of `train.batch_size` kept for the design's contract;
            setting both to different values is an error. Defaults to `None`.
        normalize: Standardize the features with a `Normalization` layer adapted
            on the training split and placed inside the exported model.
            Defaults to `True`.
        scale_target: For regression, train on standardized targets and
            append a `Rescaling` layer that maps outputs back to the original
            units, so the exported model answers in those units.
            Defaults to `True`.
    """

    _path: ClassVar[str] = "data_options"

    target: str | None = None
    task: Task = "auto"
    num_classes: int | None = option(None, ge=2)
    validation_split: float = option(0.15, ge=0.0, lt=1.0)
    test_split: float = option(0.15, ge=0.0, lt=1.0)
    stratify: bool = True
    batch_size: int | None = option(None, gt=0)
    normalize: bool = True
    scale_target: bool = True

    def validate(self) -> None:
        held_out = self.validation_split + self.test_split
        if held_out >= 1.0:
            raise config_error(
                "data_options.validation_split", self.validation_split,
                f"small enough that validation_split + test_split < 1 "
                f"(test_split={self.test_split}, sum={held_out:g})")
