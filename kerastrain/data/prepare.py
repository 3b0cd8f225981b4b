"""The data stage: load, validate, split, and fit the standardizer."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.preprocess import Standardizer, fit_standardizer
from kerastrain.data.sources import load_data
from kerastrain.data.split import Splits, split_indices
from kerastrain.data.validate import Task, validate

logger = logging.getLogger(__name__)

__all__ = ["Prepared", "prepare_data"]


@dataclasses.dataclass
class Prepared:
    """Checked data, split by index, ready to feed.

    Attributes:
        x: All features (float32); splits index into it.
        y: All labels.
        task: What the labels ask for.
        splits: Row indices of train, validation and test.
        standardizer: Training-split statistics, or None when not normalizing.
        target_scaler: Training-split mean and variance of regression
            targets, or None; the model trains on standardized targets.
        source: Where the data came from.
        feature_names: Column names when known.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    splits: Splits
    standardizer: Standardizer | None
    source: str
    target_scaler: Standardizer | None = None
    feature_names: list[str] | None = None

    @property
    def training_targets(self) -> np.ndarray:
        """The labels the model trains on (standardized for regression)."""
        if self.target_scaler is None:
            return self.y
        return ((self.y - self.target_scaler.mean[0]) / np.sqrt(self.target_scaler.variance[0])
                ).astype(np.float32)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows of one split (a copy), e.g. ``part("test")``."""
        idx = getattr(self.splits, name)
        return self.x[idx], self.y[idx]

    def summary(self) -> dict[str, Any]:
        """Facts for the report: rows, shape, task, class balance, splits."""
        facts: dict[str, Any] = {
            "data": self.source, "rows": len(self.x), "example shape": self.feature_shape,
            "task": self.task.kind, "splits": self.splits.sizes(),
        }
        if self.task.is_classification:
            counts = np.bincount(self.y.astype(np.int64), minlength=self.task.num_classes)
            names = self.task.class_names or [str(i) for i in range(self.task.num_classes)]
            facts["classes"] = dict(zip(names, counts.tolist()))
        return facts


def prepare_data(data: Any, options: DataConfig, seed: int) -> Prepared:
    """Loads, validates and splits ``data``; fits the standardizer on train.

    Args:
        data: Anything `load_data` reads.
        options: The data options.
        seed: Seed of the split.

    Returns:
        The prepared data.

    Raises:
        DataError: For data that cannot be trained on, naming the rows.
    """
    loaded = load_data(data, options)
    checked = validate(loaded.x, loaded.y, options, class_names=loaded.class_names)
    splits = split_indices(checked.y, checked.task, options, seed)
    standardizer = fit_standardizer(checked.x, splits.train) if options.normalize else None
    target_scaler = None
    if checked.task.kind == "regression" and options.scale_target:
        target_scaler = fit_standardizer(checked.y[:, np.newaxis], splits.train)
    logger.info("Data: %s, %d rows of shape %s, task %s, splits %s.", loaded.source,
                len(checked.x), checked.x.shape[1:], checked.task.kind, splits.sizes())
    return Prepared(x=checked.x, y=checked.y, task=checked.task, splits=splits,
                    standardizer=standardizer, source=loaded.source, target_scaler=target_scaler,
                    feature_names=loaded.feature_names)
