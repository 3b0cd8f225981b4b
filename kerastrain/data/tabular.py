"""Tables (DataFrames, CSV files) with numeric and categorical columns.

A table becomes a dict of column arrays, one model input per column, so the
exported SavedModel takes the raw columns: numbers as float32 (missing as
NaN) and categories as strings (missing as ``""``) or numbers. Everything
learned from the data lives in the model, learned on the training split only:

- numeric columns: missing values filled with the median (or mean, or most
  frequent value), an optional 0/1 missing indicator, then standardized;
- categorical columns: a vocabulary of the training values, most frequent
  first; missing values take the most frequent category; a value never seen in
  training goes to an out-of-vocabulary bucket (index 0); then one-hot or an
  embedding.

Bad tables raise `DataError` before training: a missing target column, a
column with no values, a number column holding a word (column, rows and CSV
lines named). Rows are dropped only when ``impute="drop"`` asks, and then
how many and which are logged and kept in the run's summary.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.text import (
    TextFeature,
    check_text_column,
    fit_vocabulary,
    looks_like_text,
    tokenizer_layer,
)
from kerastrain.data.validate import FLOAT32_MAX, check_finite, rows
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = [
    "Table",
    "Column",
    "TabularEncoding",
    "read_table",
    "read_csv",
    "fit_encoding",
    "is_table",
]

#: Integer columns with at most this many distinct values are categorical.
INT_CATEGORY_LIMIT = 10
#: `categorical="auto"` one-hot encodes up to this many categories.
ONE_HOT_LIMIT = 32
#: A text column whose values are at least this share numbers is a numeric
#: column with bad entries, reported as such.
NUMERIC_SHARE = 0.9


@dataclasses.dataclass
class Table:
    """A table as model inputs: one array per column, before any statistic.

    Attributes:
        columns: Input name to kind (`"numeric"`, `"categorical"` or `"text"`).
        sources: Input name to the original column name.
        dropped_rows: Row positions of the original data dropped on request
            (`impute="drop"`).
        line_offset: Added to a row position to give its line in the file
            (2 for a CSV with a header), or None for a DataFrame.
    """

    columns: dict[str, str]
    sources: dict[str, str]
    dropped_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    line_offset: int | None = None


@dataclasses.dataclass
class Column:
    """One column's encoding, learned on the training split.

    Attributes:
        name: The model input's name.
        kind: `"numeric"`, `"categorical"` or `"text"`.
        text: The input holds strings (else float32).
        fill: The value that replaces a missing one.
        mean: Numeric: training mean after imputation.
        variance: Numeric: training variance after imputation.
        indicator: Numeric: add a 0/1 missing indicator.
        vocabulary: Categorical: the training values, most frequent first.
            Text: the training tokens, most frequent first.
        embedding_dim: Categorical: 0 for one-hot, else the embedding width.
        tokenizer: Text: `"word"`, `"character"` or `"subword"`.
        lengths: Text: the tokens of each training row (of a uniform
            sample of them for a streamed table).
    """

    name: str
    kind: str
    text: bool = False
    fill: Any = None
    mean: float = 0.0
    variance: float = 1.0
    indicator: bool = False
    vocabulary: list[Any] = dataclasses.field(default_factory=list)
    embedding_dim: int = 0
    tokenizer: str = "word"
    lengths: np.ndarray | None = None


def is_table(x: Any) -> bool:
    """Whether ``x`` is a table's dict of column arrays."""
    return isinstance(x, dict)


def _input_name(column: Any, taken: set[str]) -> str:
    """A valid TensorFlow name for a column (letters, digits, ``_ . -``)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(column).strip()) or "column"
    if not re.match(r"[A-Za-z0-9.]", name[0]):
        name = f"c{name}"
    base, i = name, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _where(index: np.ndarray, line_offset: int | None) -> str:
    text = f"rows {rows(index)}"
    if line_offset is not None:
        lines = ", ".join(str(int(i) + line_offset) for i in index[:5])
        text += f" (file lines {lines}{', ...' if len(index) > 5 else ''})"
    return text


def _missing(values: np.ndarray) -> np.ndarray:
    """True where a value is missing: None, NaN, or an empty string."""
    import pandas as pd

    missing = np.asarray(pd.isna(values), dtype=bool)
    if values.dtype == object:
        missing |= np.array([isinstance(v, str) and v == "" for v in values], dtype=bool)
    return missing


def _column(frame: Any, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A DataFrame column's values (a categorical dtype as objects) and
    where they are missing."""
    values = frame[column].to_numpy()
    if str(frame[column].dtype) == "category":
        values = values.astype(object)
    return values, _missing(values)


def _as_numbers(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 values (NaN where missing) and the positions that are not numbers."""
    out = np.full(len(values), np.nan, np.float32)
    bad = []
    with np.errstate(over="ignore"):  # beyond float32's range: inf, refused by the caller
        if values.dtype.kind in "fiub":
            out[~missing] = values[~missing].astype(np.float32)
            return out, np.empty(0, np.int64)
        for i in np.flatnonzero(~missing):
            try:
                out[i] = float(values[i])
            except (TypeError, ValueError, OverflowError):
                bad.append(i)
    return out, np.asarray(bad, np.int64)


def _infer_kind(name: str, values: np.ndarray, missing: np.ndarray, line_offset: int | None) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "categorical"
    if kind in "iu":
        distinct = len(np.unique(values[~missing]))
        return "categorical" if distinct <= INT_CATEGORY_LIMIT else "numeric"
    if kind == "f":
        return "numeric"
    present = np.flatnonzero(~missing)
    numbers, bad = _as_numbers(values, missing)
    if (
        len(present)
        and len(bad) < len(present)
        and ((len(present) - len(bad)) / len(present) >= NUMERIC_SHARE)
    ):
        if len(bad) == 0:
            return "numeric"
        raise DataError(
            message(
                f"Column {name!r} holds numbers but {_where(bad, line_offset)} hold values that "
                f"are not (first: {values[bad[0]]!r})",
                allowed="Correct them, leave them empty to have them imputed, or declare "
                f"data_options.columns={{{name!r}: 'categorical'}}",
            )
        )
    return "text" if looks_like_text(values, missing) else "categorical"


def _refuse_repeated(names: list[str], source: str) -> None:
    """Refuses a table with two columns of one name."""
    repeated = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise DataError(
            message(
                f"{source} has more than one column named "
                + ", ".join(repr(n) for n in repeated[:5])
                + ", so a column cannot be told from its namesake",
                allowed="Rename or remove the repeated columns",
            )
        )


def read_table(
    frame: Any, options: DataConfig, *, source: str, line_offset: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, Table]:
    """Turns a DataFrame into column arrays and labels.

    Args:
        frame: A pandas DataFrame with the label column `options.target`.
        options: `target`, `columns`, `impute`.
        source: What the data is, for messages (`"data.csv"`).
        line_offset: Added to a row position to name its file line (2 for a
            CSV with a header). Defaults to `None`.

    Returns:
        The columns (float32 with NaN, or strings with `""` for missing),
        the raw labels, and the table's description.

    Raises:
        DataError: For a missing target column, a column named in `columns`
            that is not in the data, an all-missing column, a word in a
            number column, or missing values with `impute="error"`.
    """
    target = options.target
    names = [str(c) for c in frame.columns]
    if target is None:
        raise DataError(
            message(
                f"The data ({source}) is a table but no label column was named",
                received={"data_options.target": target},
                allowed="Set data_options.target to one of its columns "
                f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})",
            )
        )
    if target not in frame.columns:
        raise DataError(
            message(
                f"The label column data_options.target={target!r} is not in {source}",
                allowed=f"Its columns are {', '.join(names[:20])}"
                f"{', ...' if len(names) > 20 else ''}",
                candidates=names,
                near=target,
            )
        )
    for name in [*options.columns, *options.text_columns]:
        if name not in frame.columns:
            raise DataError(
                message(
                    f"data_options.columns names {name!r}, which is not a column of {source}",
                    allowed=f"Its columns are {', '.join(names[:20])}"
                    f"{', ...' if len(names) > 20 else ''}",
                    candidates=names,
                    near=name,
                )
            )
    _refuse_repeated(names, source)
    if len(frame) == 0:
        raise DataError(
            message(f"The data ({source}) has no rows", allowed="Pass a table with rows")
        )
    y = frame[target].to_numpy()
    x: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    sources: dict[str, str] = {}
    missing_any = np.zeros(len(frame), bool)
    taken: set[str] = set()
    for column in frame.columns:
        if column == target or options.columns.get(column) == "drop":
            continue
        values, missing = _column(frame, column)
        if missing.all():
            raise DataError(
                message(
                    f"Column {column!r} of {source} has no value in any of its {len(frame)} rows",
                    allowed="Remove it or declare "
                    f"data_options.columns={{{str(column)!r}: 'drop'}}",
                )
            )
        kind = (
            options.columns.get(column)
            or ("text" if column in options.text_columns else None)
            or _infer_kind(str(column), values, missing, line_offset)
        )
        name = _input_name(column, taken)
        if kind == "text":
            x[name] = check_text_column(
                str(column), values, missing, source, lambda bad: _where(bad, line_offset)
            )
        elif kind == "numeric":
            numbers, bad = _as_numbers(values, missing)
            if len(bad):
                raise DataError(
                    message(
                        f"Column {column!r} is declared numeric but {_where(bad, line_offset)} "
                        f"hold values that are not numbers (first: {values[bad[0]]!r})",
                        received={f"data_options.columns[{str(column)!r}]": kind},
                        allowed="Correct them or leave them empty to have them imputed",
                    )
                )
            x[name] = numbers
        elif values.dtype.kind in "fiub":
            x[name] = _as_numbers(values, missing)[0]
        else:
            x[name] = np.array(["" if m else str(v) for v, m in zip(values, missing)], dtype=object)
        if x[name].dtype.kind == "f":
            check_finite(
                x[name],
                f"values in column {str(column)!r} of {source}",
                missing_ok=True,
                where=lambda bad: _where(bad, line_offset),
                allowed="Correct them, or leave them empty to have them imputed",
            )
        kinds[name] = kind
        sources[name] = str(column)
        missing_any |= missing
    if not x:
        raise DataError(
            message(
                f"The data ({source}) has no feature columns besides the target {target!r}",
                received={"data_options.columns": dict(options.columns)},
                allowed="Keep at least one column that is not 'drop'",
            )
        )
    label_missing = _missing(y)
    dropped = np.empty(0, np.int64)
    if options.impute == "error" and missing_any.any():
        where = _where(np.flatnonzero(missing_any), line_offset)
        raise DataError(
            message(
                f"{where} of {source} have missing values and data_options.impute='error'",
                allowed="Fill them, or use impute='auto' (median and most frequent category, "
                "learned on the training split) or 'drop'",
            )
        )
    if options.impute == "drop":
        drop = missing_any | label_missing
        if drop.any():
            dropped = np.flatnonzero(drop)
            keep = ~drop
            logger.warning(
                "impute='drop': dropped %s of %s with missing values.",
                _where(dropped, line_offset),
                source,
            )
            x = {k: v[keep] for k, v in x.items()}
            y = y[keep]
            if not len(y):
                raise DataError(
                    message(
                        f"Dropping rows with missing values dropped every row of {source}: each "
                        "has a missing value",
                        received={"data_options.impute": options.impute},
                        allowed="Use impute='auto' to fill them instead",
                    )
                )
    elif label_missing.any():
        raise DataError(
            message(
                f"{_where(np.flatnonzero(label_missing), line_offset)} of {source} have no "
                f"label in column {target!r}",
                allowed="Remove them, or set data_options.impute='drop' to drop them (they are "
                "reported)",
            )
        )
    logger.info(
        "Table %s: %d rows; numeric columns %s; categorical columns %s; text columns %s.",
        source,
        len(y),
        [sources[k] for k, v in kinds.items() if v == "numeric"],
        [sources[k] for k, v in kinds.items() if v == "categorical"],
        [sources[k] for k, v in kinds.items() if v == "text"],
    )
    return (
        x,
        y,
        Table(columns=kinds, sources=sources, dropped_rows=dropped, line_offset=line_offset),
    )


def read_csv(path: Any, options: DataConfig) -> tuple[dict[str, np.ndarray], np.ndarray, Table]:
    """Reads a CSV file with a header line (tab-separated when its name ends
    in `.tsv`; see `read_table`).

    Raises:
        DataError: When the file cannot be read or parsed, and as `read_table`.
    """
    import pandas as pd

    try:
        # The header as written: pandas renames a repeated name ('a', 'a.1').
        sep = "\t" if str(path).lower().endswith(".tsv") else ","
        header = pd.read_csv(path, sep=sep, skipinitialspace=True, header=None, nrows=1, dtype=str)
        frame = pd.read_csv(path, sep=sep, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(
            message(
                f"Cannot read the CSV file {str(path)!r}: {exc}",
                allowed="Give a comma-separated file with a header row",
            )
        ) from None
    written = [str(name) for name in header.iloc[0].dropna()] if len(header) else []
    _refuse_repeated(written, str(path))
    if len(frame.columns) == 1 and options.target not in frame.columns:
        only = str(frame.columns[0])
        other = next((c for c in (";", "\t", "|") if c in only), None)
        if other is not None:
            raise DataError(
                message(
                    f"The file {str(path)!r} reads as a single column named {only!r}: its "
                    f"values seem separated by {other!r}, not by "
                    f"{'tabs' if sep == chr(9) else 'commas'}",
                    allowed="Save it with commas between values (or tabs in a .tsv file)",
                )
            )
    return read_table(frame, options, source=str(path), line_offset=2)


def _most_frequent(values: np.ndarray) -> tuple[list[Any], Any]:
    """Distinct values, most frequent first (ties in sorted order)."""
    distinct, counts = np.unique(values, return_counts=True)
    order = np.lexsort((distinct, -counts))
    vocabulary = distinct[order].tolist()
    return vocabulary, vocabulary[0]


def _embedding_dim(categories: int, options: DataConfig) -> int:
    if options.categorical == "one_hot" or (
        options.categorical == "auto" and categories + 1 <= ONE_HOT_LIMIT
    ):
        return 0
    return options.embedding_dim or min(16, max(2, round(1.6 * categories**0.56)))


def fit_encoding(
    x: dict[str, np.ndarray], table: Table, train: np.ndarray, options: DataConfig
) -> TabularEncoding:
    """Learns every column's statistics on the training rows.

    Args:
        x: The column arrays (all rows).
        table: Which column is numeric and which categorical.
        train: Indices of the training rows.
        options: `impute`, `missing_indicator`, `normalize`, `categorical`,
            `embedding_dim`.

    Returns:
        The encoding, which builds the model's inputs.

    Raises:
        DataError: When a column has no value in the training split.
    """
    columns = []
    for name, kind in table.columns.items():
        values = x[name][train]
        text = values.dtype == object
        missing = values == "" if text else np.isnan(values)
        if missing.all():
            raise DataError(
                message(
                    f"Column {table.sources[name]!r} has no value in the {len(train)} training "
                    "rows, so nothing can be learned to fill it",
                    allowed="Remove it (data_options.columns="
                    f"{{{table.sources[name]!r}: 'drop'}}) or change the split",
                )
            )
        present = values[~missing]
        if kind == "text":
            vocabulary, lengths = fit_vocabulary(values, options, table.sources[name])
            columns.append(
                Column(
                    name,
                    kind,
                    text=True,
                    fill="",
                    vocabulary=vocabulary,
                    tokenizer=options.tokenizer,
                    lengths=lengths,
                )
            )
            continue
        if kind == "categorical":
            vocabulary, fill = _most_frequent(present)
            columns.append(
                Column(
                    name,
                    kind,
                    text=text,
                    fill=fill,
                    vocabulary=vocabulary,
                    embedding_dim=_embedding_dim(len(vocabulary), options),
                )
            )
            continue
        if options.impute == "mean":
            fill = float(np.mean(present, dtype=np.float64))
        elif options.impute == "most_frequent":
            fill = float(_most_frequent(present)[1])
        else:
            fill = float(np.median(present))
        filled = np.where(missing, fill, values).astype(np.float64)
        mean, variance = (
            (float(filled.mean()), float(filled.var())) if options.normalize else (0.0, 1.0)
        )
        if not variance <= FLOAT32_MAX:
            raise DataError(
                message(
                    f"Column {table.sources[name]!r} spreads too widely to be standardized in "
                    f"float32: its variance on the training rows is {variance:.3g}, beyond "
                    f"float32's largest number ({FLOAT32_MAX:.3g})",
                    allowed="Rescale the column (divide it by a power of ten), or set "
                    "data_options.normalize=False",
                )
            )
        columns.append(
            Column(
                name,
                kind,
                fill=fill,
                mean=mean,
                variance=variance if variance > 1e-12 else 1.0,
                indicator=options.missing_indicator and bool(missing.any()),
            )
        )
    return TabularEncoding(columns)


@dataclasses.dataclass
class TabularEncoding:
    """Every column's encoding; builds the model's inputs inside a scope.

    Attributes:
        columns: The columns, in the data's order.
    """

    columns: list[Column]

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "numeric"]

    def numeric_std(self) -> dict[str, float]:
        """Training standard deviation of each numeric column (for noise)."""
        return {c.name: math.sqrt(c.variance) for c in self.numeric}

    def unseen(self, x: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, str]:
        """Categories of the rows ``indices`` that training never saw (they
        go to the out-of-vocabulary bucket), column by column."""
        found = {}
        for c in self.columns:
            if c.kind != "categorical":
                continue
            values = x[c.name][indices]
            present = values != "" if c.text else ~np.isnan(values)
            new = present & ~np.isin(values, np.asarray(c.vocabulary, dtype=values.dtype))
            if new.any():
                distinct = np.unique(values[new])
                more = ", ..." if len(distinct) > 3 else ""
                shown = ", ".join(repr(v) for v in distinct[:3])
                found[c.name] = f"{int(new.sum())} rows ({shown}{more})"
        return found

    def describe(self) -> dict[str, str]:
        """One line per column for the report."""
        out = {}
        for c in self.columns:
            if c.kind == "numeric":
                out[c.name] = f"numeric, missing -> {c.fill:.4g}" + (
                    ", with indicator" if c.indicator else ""
                )
            elif c.kind == "text":
                lengths = c.lengths if c.lengths is not None else np.zeros(1)
                out[c.name] = (
                    f"text, {c.tokenizer} tokens, vocabulary of {len(c.vocabulary)} + padding "
                    f"and out-of-vocabulary, {np.median(lengths):g} tokens per training row "
                    f"(median; longest {int(lengths.max())})"
                )
            else:
                encoding = f"embedding({c.embedding_dim})" if c.embedding_dim else "one-hot"
                out[c.name] = (
                    f"categorical, {len(c.vocabulary)} categories + out-of-vocabulary, "
                    f"{encoding}, missing -> {c.fill!r}"
                )
        return out

    def build(self) -> tuple[dict[str, Any], Any, dict[str, TextFeature]]:
        """The model's `Input`s (one per column), the encoded features of
        the numeric and categorical columns (None when there are none), and
        each text column's token ids.

        Call inside the strategy scope: the layers' variables are made here.
        """
        from kerastrain._keras import keras, tf
        from kerastrain.data import layers

        inputs = {
            c.name: keras.Input(shape=(), name=c.name, dtype=tf.string if c.text else tf.float32)
            for c in self.columns
        }
        # float32 throughout, whatever the mixed-precision policy: raw values
        # (an income of 120,000) do not fit float16 and lose digits in
        # bfloat16; the model's first layer casts the standardized features.
        f32 = {"dtype": "float32"}
        parts = []
        numeric = self.numeric
        if numeric:
            values = layers.FillMissing([c.fill for c in numeric], name="impute", **f32)(
                [inputs[c.name] for c in numeric]
            )
            parts.append(
                keras.layers.Normalization(
                    axis=-1,
                    mean=[c.mean for c in numeric],
                    variance=[c.variance for c in numeric],
                    name="normalize",
                    **f32,
                )(values)
            )
            flagged = [inputs[c.name] for c in numeric if c.indicator]
            if flagged:
                parts.append(layers.MissingIndicator(name="missing_indicator", **f32)(flagged))
        text = {
            c.name: TextFeature(
                ids=tokenizer_layer(c.vocabulary, c.tokenizer, f"tokenize_{c.name}")(
                    inputs[c.name]
                ),
                vocabulary_size=len(c.vocabulary) + 2,
                lengths=c.lengths if c.lengths is not None else np.zeros(0, np.int64),
                source=c.name,
            )
            for c in self.columns
            if c.kind == "text"
        }
        for c in self.columns:
            if c.kind != "categorical":
                continue
            encoded = layers.EncodeCategory(
                vocabulary=c.vocabulary,
                fill=c.fill,
                one_hot=not c.embedding_dim,
                name=f"encode_{c.name}",
                **f32,
            )(inputs[c.name])
            if c.embedding_dim:
                encoded = keras.layers.Embedding(
                    len(c.vocabulary) + 1, c.embedding_dim, name=f"embed_{c.name}", **f32
                )(encoded)
            parts.append(encoded)
        if not parts:
            return inputs, None, text
        features = (
            parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features", **f32)(parts)
        )
        return inputs, features, text


def take_rows(x: dict[str, np.ndarray], index: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``index`` of every column (a copy of those rows only)."""
    return {k: v[index] for k, v in x.items()}
