"""How real rows become the GAN's numbers and generated numbers become rows.

- Images: pixels scaled to [-1, 1] from the training split's range; generated
  pixels are scaled back, rounded when every training pixel is a whole
  number, clipped to that range and cast to the data's dtype.
- Feature arrays and tables: each numeric column standardized (missing values
  take the training median), each categorical column one-hot over its training
  categories. Generated numbers are mapped back to raw columns: a numeric one
  rounded to the decimals its training values use and clipped to their range;
  a categorical one to its most probable category. So generated rows pass the
  model's own preprocessing exactly as real ones do.

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Codec", "ColumnCodec", "fit_codec"]


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals (at most 6) that write every value exactly."""
    for d in range(7):
        scaled = values * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))):
            return d
    return 6


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype == object:
        return np.array(
            [v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in values], bool
        )
    return np.zeros(len(values), bool)


@dataclasses.dataclass
class ColumnCodec:
    """One column's encoding.

    Attributes:
        name: The column (a table's input name; the index of an array's).
        kind: `"numeric"` or `"categorical"`.
        mean: Numeric: training mean.
        std: Numeric: training standard deviation (1 when constant).
        low: Numeric: training minimum.
        high: Numeric: training maximum.
        decimals: Numeric: decimals of the training values.
        fill: Numeric: the value of a missing entry (the training median).
        vocabulary: Categorical: the training categories.
        dtype: The column's dtype.
    """

    name: Any
    kind: str
    mean: float = 0.0
    std: float = 1.0
    low: float = 0.0
    high: float = 0.0
    decimals: int = 0
    fill: float = 0.0
    vocabulary: list[Any] = dataclasses.field(default_factory=list)
    dtype: Any = np.float32

    @property
    def width(self) -> int:
        return len(self.vocabulary) if self.kind == "categorical" else 1


def _numeric(name: Any, values: np.ndarray) -> ColumnCodec:
    values = values.astype(np.float64)
    known = values[~np.isnan(values)]
    if len(known) == 0:
        known = np.zeros(1)
    std = float(known.std())
    return ColumnCodec(
        name,
        "numeric",
        mean=float(known.mean()),
        std=std if std > 1e-12 else 1.0,
        low=float(known.min()),
        high=float(known.max()),
        decimals=_decimals(known),
        fill=float(np.median(known)),
    )


def _categorical(name: Any, values: np.ndarray) -> ColumnCodec:
    known = values[~_missing(values)]
    if len(known) == 0:
        known = values[:1]
    keys = known.astype(str) if values.dtype == object else known
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # most frequent first
    vocabulary = [known[first[i]] for i in order]
    return ColumnCodec(name, "categorical", vocabulary=vocabulary, dtype=values.dtype)


@dataclasses.dataclass
class Codec:
    """The map between real rows and the GAN's numbers.

    Attributes:
        kind: `"image"`, `"array"` (a 2-D feature array) or `"table"` (a dict
            of columns).
        shape: One example's shape (images, arrays).
        low: Images: the smallest training pixel.
        high: Images: the largest training pixel.
        integral: Images: every training pixel is a whole number.
        dtype: Images and arrays: the data's dtype.
        columns: Arrays and tables: each column's encoding.
    """

    kind: str
    shape: tuple[int, ...]
    low: float = 0.0
    high: float = 1.0
    integral: bool = False
    dtype: Any = np.float32
    columns: list[ColumnCodec] = dataclasses.field(default_factory=list)

    @property
    def width(self) -> int:
        """Numbers per encoded example (flattened)."""
        if self.kind == "image":
            return int(np.prod(self.shape))
        return sum(c.width for c in self.columns)

    @property
    def segments(self) -> list[tuple[str, int]]:
        """The generator's output blocks in order: `("numeric", n)` for a run
        of numeric columns, `("categorical", k)` for each categorical one."""
        blocks: list[tuple[str, int]] = []
        for column in self.columns:
            if column.kind == "numeric" and blocks and blocks[-1][0] == "numeric":
                blocks[-1] = ("numeric", blocks[-1][1] + 1)
            else:
                blocks.append((column.kind, column.width))
        return blocks

    def encode(self, x: Any) -> np.ndarray:
        """Real rows as float32 numbers: images `(n, *shape)` in [-1, 1],
        arrays and tables `(n, width)`."""
        if self.kind == "image":
            span = max(self.high - self.low, 1e-12)
            return ((np.asarray(x, np.float32) - self.low) / span * 2.0 - 1.0).astype(np.float32)
        parts = []
        for i, column in enumerate(self.columns):
            values = x[column.name] if self.kind == "table" else np.asarray(x)[:, i]
            if column.kind == "numeric":
                v = values.astype(np.float64)
                v = np.where(np.isnan(v), column.fill, v)
                parts.append(((v - column.mean) / column.std)[:, None])
            else:
                text = values.astype(str) if values.dtype == object else values
                vocab = np.asarray(
                    [str(v) if values.dtype == object else v for v in column.vocabulary]
                )
                parts.append((text[:, None] == vocab[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def decode(self, numbers: np.ndarray) -> Any:
        """Generated numbers as raw rows of the data's own kind and dtype."""
        numbers = np.asarray(numbers, np.float64)
        if self.kind == "image":
            pixels = (np.clip(numbers, -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low) + self.low
            if self.integral:
                pixels = np.round(pixels)
            return np.clip(pixels, self.low, self.high).astype(self.dtype)
        out: dict[Any, np.ndarray] = {}
        at = 0
        for column in self.columns:
            block = numbers[:, at : at + column.width]
            at += column.width
            if column.kind == "numeric":
                v = block[:, 0] * column.std + column.mean
                v = np.clip(np.round(v, column.decimals), column.low, column.high)
                out[column.name] = v
            else:
                picks = np.argmax(block, axis=1)
                values = np.empty(len(block), dtype=object)
                values[:] = [column.vocabulary[i] for i in picks]
                out[column.name] = values
        if self.kind == "array":
            return np.stack([out[c.name] for c in self.columns], axis=1).astype(self.dtype)
        for column in self.columns:
            if column.kind == "categorical" and column.dtype != object:
                out[column.name] = out[column.name].astype(column.dtype)
            elif column.kind == "numeric":
                out[column.name] = out[column.name].astype(column.dtype)
        return out


def fit_codec(x: Any, train: np.ndarray, kinds: dict[str, str] | None = None) -> Codec:
    """The codec of ``x`` learned on the rows ``train``.

    Args:
        x: Images `(n, h, w, c)`, a 2-D feature array, or a table (a dict of
            column arrays).
        train: The training rows.
        kinds: A table's columns: input name to `"numeric"` or
            `"categorical"`. Defaults to `None` (every column numeric).
    """
    if isinstance(x, dict):
        columns = []
        for name, values in x.items():
            part = values[train]
            if (kinds or {}).get(name, "numeric") == "categorical" or part.dtype == object:
                columns.append(_categorical(name, part))
            else:
                codec = _numeric(name, part)
                codec.dtype = values.dtype
                columns.append(codec)
        return Codec("table", (len(columns),), columns=columns)
    x = np.asarray(x)
    part = x[train]
    if x.ndim >= 3:
        low, high = float(part.min()), float(part.max())
        integral = bool(np.all(part == np.round(part)))
        return Codec("image", tuple(x.shape[1:]), low, high, integral, x.dtype)
    columns = [_numeric(i, part[:, i]) for i in range(x.shape[1])]
    return Codec("array", (x.shape[1],), dtype=x.dtype, columns=columns)
