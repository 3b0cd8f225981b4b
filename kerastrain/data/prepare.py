"""The data stage: load, validate, split, and fit what the model learns from
the training split (the standardizer, a table's column encodings)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.config.adaptive import parse_auto
from kerastrain.config.data import IMAGE_AUGMENTATIONS, parse_augment
from kerastrain.data.audit import drop_duplicates
from kerastrain.data.preprocess import Standardizer, fit_standardizer, fit_target_scaler
from kerastrain.data.sources import load_data
from kerastrain.data.split import Splits, fixed_splits, split_indices
from kerastrain.data.stream import Stream
from kerastrain.data.table_stream import TableStream, streamed_table_facts
from kerastrain.data.tabular import Table, TabularEncoding, fit_encoding, take_rows
from kerastrain.data.validate import check_labels, rows, validate
from kerastrain.errors import DataError, config_error, message
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = ["Prepared", "prepare_data"]

#: Training rows read from a stream to estimate the standardizer.
STREAM_STATS_ROWS = 2048


@dataclasses.dataclass
class Prepared:
    """Checked data, split by index, ready to feed.

    Attributes:
        x: All features; splits index into it. A float32 (or uint8 image)
            array, a dict of column arrays (tables), or a `Stream` (file-based
            sources too large for memory). Use `rows` or `part` to read rows
            whatever the kind.
        y: All labels.
        task: What the labels ask for.
        splits: Row indices of train, validation and test.
        standardizer: Training-split statistics, or None when not normalizing
            (or for tables, whose `encoding` standardizes).
        target_scaler: Training-split mean and variance of regression
            targets, or None; the model trains on standardized targets.
        source: Where the data came from.
        feature_names: Column names when known.
        encoding: For tables: each column's encoding, learned on train.
        table: For tables: each column's kind and original name.
        augment: The augmentations of training batches, parsed (for the
            adaptive policy, at full strength).
        augment_policy: The adaptive policy's options (`augment="auto"`),
            else None.
        dropped: Rows of the original data dropped on request
            (`impute="drop"`), else empty.
        options: The data options it was prepared with.
        duplicates: Rows of the original data dropped as exact duplicates
            (`deduplicate=True`), else empty.
    """

    x: Any
    y: np.ndarray
    task: Task
    splits: Splits
    standardizer: Standardizer | None
    source: str
    target_scaler: Standardizer | None = None
    feature_names: list[str] | None = None
    encoding: TabularEncoding | None = None
    table: Table | None = None
    augment: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dropped: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    options: DataConfig = dataclasses.field(default_factory=DataConfig)
    duplicates: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    augment_policy: dict[str, Any] | None = None

    @property
    def is_table(self) -> bool:
        return isinstance(self.x, dict)

    @property
    def has_text(self) -> bool:
        """Whether the data has text columns (tokenized inside the model)."""
        return self.encoding is not None and any(c.kind == "text" for c in self.encoding.columns)

    @property
    def is_stream(self) -> bool:
        return isinstance(self.x, Stream)

    @property
    def num_rows(self) -> int:
        return len(self.y)

    @property
    def training_targets(self) -> np.ndarray:
        """The labels the model trains on (standardized for regression)."""
        if self.target_scaler is None:
            return self.y
        return (
            (self.y - self.target_scaler.mean[0]) / np.sqrt(self.target_scaler.variance[0])
        ).astype(np.float32)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example (`(columns,)` for a table's raw columns)."""
        if self.is_table:
            return (len(self.x),)
        return tuple(self.x.shape[1:])

    def rows(self, indices: np.ndarray) -> Any:
        """The features of the rows ``indices`` (a copy of those rows only)."""
        if self.is_table:
            return take_rows(self.x, indices)
        return self.x[indices]

    def part(self, name: str) -> tuple[Any, np.ndarray]:
        """The rows of one split (a copy), e.g. ``part("test")``."""
        idx = getattr(self.splits, name)
        return self.rows(idx), self.y[idx]

    def sample(self, name: str, rows: int, seed: int = 0) -> Any:
        """A seeded random sample of ``rows`` rows of one split's features
        (all of them when the split has fewer), in their order: only those
        rows are copied (the int8 calibration set of a large training split)."""
        idx = getattr(self.splits, name)
        if len(idx) > rows:
            idx = idx[np.sort(np.random.default_rng(seed).choice(len(idx), rows, replace=False))]
        return self.rows(idx)

    def with_splits(self, splits: Splits) -> Prepared:
        """The same data split differently (cross-validation folds), with the
        standardizer and column encodings refitted on the new training rows.
        The data itself is shared, not copied."""
        standardizer, encoding = _fit(self.x, self.table, splits.train, self.options)
        return dataclasses.replace(
            self,
            splits=splits,
            standardizer=standardizer,
            encoding=encoding,
            target_scaler=_target_scaler(self.y, self.task, splits.train, self.options),
        )

    def summary(self) -> dict[str, Any]:
        """Facts for the report: rows, shape, task, class balance, splits."""
        facts: dict[str, Any] = {
            "data": self.source,
            "rows": self.num_rows,
            "example shape": self.feature_shape,
            "task": self.task.kind,
            "splits": self.splits.sizes(),
        }
        if isinstance(self.x, TableStream):
            facts.update(streamed_table_facts(self.x))
        elif self.is_stream:
            facts["read"] = "streamed from the files every epoch"
        if self.task.is_classification:
            counts = np.bincount(self.y.astype(np.int64), minlength=self.task.num_classes)
            names = self.task.class_names or [str(i) for i in range(self.task.num_classes)]
            facts["classes"] = dict(zip(names, counts.tolist()))
        if self.encoding is not None:
            facts["columns"] = self.encoding.describe()
            held = np.concatenate([self.splits.val, self.splits.test])
            unseen = {} if self.is_stream else self.encoding.unseen(self.x, held)
            if unseen:
                facts["categories unseen in training (out-of-vocabulary)"] = unseen
        if len(self.dropped):
            facts["dropped rows (impute='drop')"] = rows(self.dropped, limit=20)
        if len(self.duplicates):
            facts["dropped duplicate rows (deduplicate=True)"] = (
                f"{len(self.duplicates)}: {rows(self.duplicates, limit=10)}"
            )
        if self.augment:
            facts["augmentation (training only)"] = ", ".join(
                f"{a['name']}({', '.join(f'{k}={v}' for k, v in a.items() if k != 'name')})"
                for a in self.augment
            )
        return facts

    def __repr__(self) -> str:
        return (
            f"Prepared({self.source}, {self.num_rows} rows, task={self.task.kind}, "
            f"splits={self.splits.sizes()})"
        )


def _fit(
    x: Any, table: Table | None, train: np.ndarray, options: DataConfig
) -> tuple[Standardizer | None, TabularEncoding | None]:
    if table is not None and isinstance(x, TableStream):
        return None, x.encoding_for(train)
    if table is not None:
        return None, fit_encoding(x, table, train, options)
    if not options.normalize:
        return None, None
    if isinstance(x, Stream):
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(train, min(len(train), STREAM_STATS_ROWS), replace=False))
        logger.info(
            "Standardizer estimated on %d of the %d training rows (streamed data).",
            len(sample),
            len(train),
        )
        return fit_standardizer(x.read(sample), np.arange(len(sample))), None
    return fit_standardizer(x, train), None


def _target_scaler(
    y: np.ndarray, task: Task, train: np.ndarray, options: DataConfig
) -> Standardizer | None:
    if task.kind == "regression" and options.scale_target:
        return fit_target_scaler(y, train)
    return None


def _check_learnable(y: np.ndarray, task: Task, splits: Splits, options: DataConfig) -> None:
    """Refuses a constant regression target, and a training split that holds
    a single class (a time-ordered or unstratified split of classes that come
    in runs)."""
    if task.kind == "regression":
        if np.all(y == y[0]):
            raise DataError(
                message(
                    f"Every regression target is {float(y[0]):g} (all {len(y)} rows): there "
                    "is nothing to learn, and a model that answers that constant scores "
                    "perfectly",
                    allowed="Check that the labels (or data_options.target) are the right ones",
                )
            )
        return
    present = np.unique(y[splits.train])
    if len(present) < 2:
        value = int(present[0])
        name = task.class_names[value] if task.class_names else value
        raise DataError(
            message(
                f"The training split holds a single class, {name!r} (all its "
                f"{len(splits.train)} rows); the other classes fall in validation or test only",
                received={
                    "data_options.split": options.split,
                    "data_options.stratify": options.stratify,
                },
                allowed="Use data_options.split='random' with stratify=True, or shuffle the rows",
            )
        )


def _augmentations(options: DataConfig, x: Any, task: Task) -> list[dict[str, Any]]:
    images = not isinstance(x, dict) and len(x.shape) >= 3
    parsed = parse_augment(options.augment, "image" if images else "table")
    shape = "a table" if isinstance(x, dict) else f"shape {tuple(x.shape[1:])}"
    for item in parsed:
        name = item["name"]
        if name in IMAGE_AUGMENTATIONS and not images:
            raise config_error(
                "data_options.augment",
                name,
                "an augmentation for this data: its examples are not images "
                f"({shape}); use 'noise' or 'mixup'",
            )
        if name == "noise" and images:
            raise config_error(
                "data_options.augment",
                name,
                "an image augmentation (noise applies to table columns)",
            )
        if name == "cutmix" and task.kind == "regression":
            raise config_error(
                "data_options.augment",
                name,
                "an augmentation for a regression task (cutmix mixes classes; "
                "mixup mixes targets too)",
            )
    return parsed


def prepare_data(data: Any, options: DataConfig, seed: int) -> Prepared:
    """Loads, validates and splits ``data``; fits what is learned on train.

    Args:
        data: Anything `load_data` reads, or a `Prepared` (returned as is:
            cross-validation passes each fold this way).
        options: The data options.
        seed: Seed of the split.

    Returns:
        The prepared data.

    Raises:
        DataError: For data that cannot be trained on, naming the rows.
        ConfigError: For an augmentation that does not fit the data.
    """
    if isinstance(data, Prepared):
        return data
    loaded = load_data(data, options)
    if isinstance(loaded.x, (dict, Stream)):
        y, task = check_labels(loaded.y, options, loaded.class_names)
        x = loaded.x
        if isinstance(x, Stream) and len(x) != len(y):
            raise DataError(
                message(
                    f"{loaded.source} has {len(x)} examples but {len(y)} labels",
                    allowed="Each example needs exactly one label",
                )
            )
    else:
        checked = validate(loaded.x, loaded.y, options, class_names=loaded.class_names)
        x, y, task = checked.x, checked.y, checked.task
    parts, duplicates = loaded.parts, np.empty(0, np.int64)
    if options.deduplicate:
        x, y, parts, duplicates = drop_duplicates(x, y, parts, source=loaded.source)
    if parts:
        splits = fixed_splits(y, task, options, seed, parts)
    else:
        splits = split_indices(y, task, options, seed)
    _check_learnable(y, task, splits, options)
    augment = _augmentations(options, x, task)
    if any(a["name"] in ("mixup", "cutmix") for a in augment):
        task = dataclasses.replace(task, soft_labels=True)
    standardizer, encoding = _fit(x, loaded.table, splits.train, options)
    dropped = loaded.table.dropped_rows if loaded.table is not None else np.empty(0, np.int64)
    if encoding is not None and not isinstance(x, Stream):
        held = np.concatenate([splits.val, splits.test])
        for column, what in encoding.unseen(x, held).items():
            logger.warning(
                "Column %r: %s of the held-out rows have categories never seen in "
                "training; the model maps them to its out-of-vocabulary bucket.",
                column,
                what,
            )
    logger.info(
        "Data: %s, %d rows of shape %s, task %s, splits %s.",
        loaded.source,
        len(y),
        "table" if isinstance(x, dict) else x.shape[1:],
        task.kind,
        splits.sizes(),
    )
    return Prepared(
        x=x,
        y=y,
        task=task,
        splits=splits,
        standardizer=standardizer,
        source=loaded.source,
        target_scaler=_target_scaler(y, task, splits.train, options),
        feature_names=loaded.feature_names,
        encoding=encoding,
        table=loaded.table,
        augment=augment,
        dropped=dropped,
        options=options,
        duplicates=duplicates,
        augment_policy=parse_auto(options.augment),
    )
