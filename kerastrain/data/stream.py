"""Data too large to hold in memory: rows read from their files every epoch.

A `Stream` stands in for the feature array of a file-based source (an image
folder, a TFDS data set) whose decoded size exceeds
``data_options.in_memory_mb``. Labels are small and always in memory, so
validation, stratified splits and class counts work as for arrays; only the
features are read, decoded and resized on the fly, in parallel, by tf.data.

Row indices mean the same thing as for arrays (position in the source's fixed
order), so `Splits` apply unchanged.
"""

from __future__ import annotations

import abc
import math

import numpy as np

__all__ = ["Stream"]


class Stream(abc.ABC):
    """Features read from files on demand.

    Attributes:
        num_rows: Examples in the source.
        example_shape: Shape of one example's features.
        description: Where the data comes from, for the report.
    """

    num_rows: int
    example_shape: tuple[int, ...]
    description: str

    @property
    def dtype(self) -> np.dtype:
        """The features' dtype (decoded images are uint8)."""
        return np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        """Like an array's: rows first."""
        return (self.num_rows, *self.example_shape)

    def __len__(self) -> int:
        return self.num_rows

    def decoded_bytes(self, rows: int | None = None) -> int:
        """Decoded size of ``rows`` examples (all by default)."""
        rows = self.num_rows if rows is None else rows
        return rows * math.prod(self.example_shape) * self.dtype.itemsize

    @abc.abstractmethod
    def examples(self, indices: np.ndarray, *, shuffle: bool, seed: int | None = None):
        """A `tf.data.Dataset` of `(index, features)` for the rows ``indices``.

        Args:
            indices: The rows to read (a split).
            shuffle: Shuffle them (every epoch, seeded).
            seed: The shuffle seed. Defaults to `None`.
        """

    @abc.abstractmethod
    def read(self, indices: np.ndarray) -> np.ndarray:
        """The features of the rows ``indices``, decoded into memory, in that order."""

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return self.read(np.asarray(indices))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description}, {self.num_rows} rows)"
