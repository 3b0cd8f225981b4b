"""Tables from files, in memory when small, streamed when large.

A table in CSV, Parquet or TFRecord files (see `table_files`) whose size is
at most ``data_options.in_memory_mb`` is read whole and handled as a
DataFrame is (`tabular.read_table`). A larger one is streamed:

1. one statistics pass reads every file once, in Python through pyarrow
   (CSV, Parquet) or `tf.data` (TFRecord), without holding the rows: each
   row's split (a stable hash of ``data_options.split_key`` or of its file
   name and position), and over the training rows only each numeric column's
   count, mean, variance, missing rate and a bounded sample for its median,
   and each categorical column's value counts (the vocabulary, most frequent
   first; unseen values go to the out-of-vocabulary bucket), and each text
   column's token counts (`_TextStats`: the vocabulary as `TextVectorization`
   ranks it, or a WordPiece vocabulary learned from the word counts, in a
   counter capped at `TEXT_TOKEN_LIMIT` distinct tokens). Only the labels
   (one number a row) and the splits (one byte a row) stay in memory.
   Progress (rows read, rows/s, time left) is logged.
2. every epoch, `tf.data` reads the files in parallel (interleaved over the
   files; batched parsing: `tf.io.decode_csv` on batches of lines,
   `tf.io.parse_example` on batches of records, Parquet through pyarrow
   record batches), keeps the split's rows, shuffles them in a bounded
   buffer and prefetches.

The encoding built from the statistics is the one in-memory tables use (the
same preprocessing layers inside the model), so the exported SavedModel takes
the raw columns. Stratified splits need every label before splitting, so a
streamed table is split by hash only (the log says so).

Under a multi-worker strategy each worker reads its own share: whole files
when there are at least as many files as workers (CSV and TFRecord), else
every worker reads every file and keeps every n-th batch (by record).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.stream import Stream
from kerastrain.data.table_files import (
    TEST,
    TRAIN,
    VAL,
    FileColumn,
    TableFiles,
    file_schema,
    iter_file_batches,
    key_hashes,
    position_hashes,
    read_frame,
    split_codes,
)
from kerastrain.data.tabular import Column, Table, TabularEncoding, _embedding_dim, read_table
from kerastrain.data.text import count_tokens, row_lengths, vocabulary_from_counts
from kerastrain.data.validate import FLOAT32_MAX
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = [
    "TableStream",
    "read_table_files",
    "shard_policy",
    "streamed_table_facts",
    "SHUFFLE_ROWS",
]

#: Rows held by the training shuffle buffer of a streamed table.
SHUFFLE_ROWS = 16384
#: Lines or records parsed at a time by tf.data.
PARSE_ROWS = 1024
#: Parquet files read at once by the training stream (each holds one decoded
#: row group while it is open).
PARQUET_OPEN = 2
#: Parsed blocks pooled and permuted together into training batches.
MIX_BLOCKS = 8
#: Values kept per numeric column to estimate its median (exact below this).
MEDIAN_SAMPLE = 200_000
#: Distinct values counted per categorical column; rarer ones are out of vocabulary.
VOCABULARY_LIMIT = 100_000
#: Distinct tokens (words for the subword tokenizer) a text column's counter
#: keeps, at least (twice `vocabulary_size` when that is more): past twice
#: this many it is cut back to the most frequent this many, so a token rarer
#: than those may lose the count it had (the vocabulary is then approximate in
#: its rarest entries, and the log says so).
TEXT_TOKEN_LIMIT = 200_000
#: Training rows of a text column sampled (uniformly) to measure their lengths.
TEXT_LENGTH_SAMPLE = 20_000
#: Labels with at most this many distinct values have their counts logged.
CLASS_COUNT_LIMIT = 100
#: Seconds between two progress lines of the statistics pass.
PROGRESS_SECONDS = 10.0


#: Rows handled at a time when split rows are listed or checked (bounds the
#: temporary arrays to a few MiB whatever the table's size).
ROW_CHUNK = 1 << 20


# --------------------------------------------------------------------------- per-row state


def compact_labels(y: np.ndarray, shared: dict[Any, Any]) -> np.ndarray:
    """A batch of raw labels in the smallest dtype that holds them exactly.

    Integers go to the smallest integer type of their range, floats to
    float32 when no value changes; text labels point at one Python string
    per distinct value, kept in ``shared`` across batches (8 bytes a row, not
    a string object each). What the labels say, and so the task inferred
    from them, is unchanged.

    Args:
        y: One batch of a label column, as read.
        shared: The distinct text labels seen so far (updated).

    Returns:
        The same values, held in fewer bytes a row when possible.
    """
    if not len(y):
        return y
    if y.dtype == object:
        distinct, inverse = np.unique(y, return_inverse=True)
        canonical = np.array([shared.setdefault(v, v) for v in distinct.tolist()], dtype=object)
        return canonical[inverse.reshape(-1)]
    if y.dtype.kind in "iu":
        low, high = int(y.min()), int(y.max())
        for dtype in (np.int8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return y.astype(dtype)
        return y
    if y.dtype == np.float64:
        narrow = y.astype(np.float32)
        if np.array_equal(narrow.astype(np.float64), y):
            return narrow
    return y


def row_index_dtype(rows: int) -> np.dtype:
    """The dtype of row indices into a table of ``rows`` rows: int32 below
    2³¹ rows (half the bytes of int64), else int64."""
    return np.dtype(np.int32 if rows < 2**31 else np.int64)


def split_rows(code: np.ndarray, value: int) -> np.ndarray:
    """The sorted rows whose split code is ``value``, as `row_index_dtype`
    indices, listed a chunk at a time (no int64 array of the table's size)."""
    dtype = row_index_dtype(len(code))
    chunks = [
        np.flatnonzero(code[start : start + ROW_CHUNK] == value).astype(dtype) + dtype.type(start)
        for start in range(0, len(code), ROW_CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype)


# --------------------------------------------------------------------------- statistics


class _NumericStats:
    """Count, shifted sums and a bounded sample of one numeric column."""

    def __init__(self, seed: int):
        self.rows = 0
        self.present = 0
        self.shift: float | None = None
        self.s1 = 0.0
        self.s2 = 0.0
        self.sample = np.empty(0, np.float64)
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        self.rows += len(values)
        present = values[~np.isnan(values)]
        if not len(present):
            return
        if self.shift is None:
            self.shift = float(present[0])
        shifted = present - self.shift
        self.s1 += float(shifted.sum())
        self.s2 += float(np.dot(shifted, shifted))
        seen = self.present
        self.present += len(present)
        room = MEDIAN_SAMPLE - len(self.sample)
        if room > 0:
            self.sample = np.concatenate([self.sample, present[:room]])
            present, seen = present[room:], seen + room
        if len(present):  # reservoir sampling: each value kept with chance k / seen
            slots = self.rng.integers(0, seen + np.arange(1, len(present) + 1))
            keep = slots < MEDIAN_SAMPLE
            self.sample[slots[keep]] = present[keep]

    def column(self, c: FileColumn, options: DataConfig) -> Column:
        if options.impute == "mean":
            fill = self.shift + self.s1 / self.present
        elif options.impute == "most_frequent":
            values, counts = np.unique(self.sample, return_counts=True)
            fill = float(values[np.argmax(counts)])
        else:
            fill = float(np.median(self.sample))
        missing = self.rows - self.present
        mean, variance = 0.0, 1.0
        if options.normalize:
            d = fill - self.shift  # sums of the imputed column, shifted
            s1, s2 = self.s1 + missing * d, self.s2 + missing * d * d
            mean = self.shift + s1 / self.rows
            variance = max(s2 / self.rows - (s1 / self.rows) ** 2, 0.0)
        if not variance <= FLOAT32_MAX:
            raise DataError(
                message(
                    f"Column {c.source!r} spreads too widely to be standardized in float32: its "
                    f"variance on the training rows is {variance:.3g}",
                    allowed="Rescale the column, or set data_options.normalize=False",
                )
            )
        return Column(
            c.name,
            "numeric",
            fill=float(fill),
            mean=float(mean),
            variance=variance if variance > 1e-12 else 1.0,
            indicator=options.missing_indicator and missing > 0,
        )


class _CategoryStats:
    """Value counts of one categorical column."""

    def __init__(self) -> None:
        self.rows = 0
        self.present = 0
        self.counts: collections.Counter = collections.Counter()
        self.capped = False

    def add(self, values: Any, train: np.ndarray) -> None:
        """Counts the training rows of ``values`` (floats, or a pyarrow
        string array: counted in C++, no Python string made)."""
        if isinstance(values, np.ndarray) and values.dtype == object:  # text split key
            import pyarrow as pa

            values = pa.array(values, pa.string())
        if isinstance(values, np.ndarray):
            values = values[train]
            present = values[~np.isnan(values)]
            distinct, counts = np.unique(present, return_counts=True)
            pairs = zip(distinct.tolist(), counts.tolist())
        else:
            import pyarrow as pa
            import pyarrow.compute as pc

            values = values.filter(pa.array(train))
            counted = pc.value_counts(values)
            pairs = (
                (v, n)
                for v, n in zip(
                    counted.field("values").to_pylist(), counted.field("counts").to_pylist()
                )
                if v != ""
            )
        self.rows += len(values)
        for value, count in pairs:
            self.counts[value] += count
            self.present += count
        if len(self.counts) > 2 * VOCABULARY_LIMIT:
            self.counts = collections.Counter(dict(self.counts.most_common(VOCABULARY_LIMIT)))
            self.capped = True

    def column(self, c: FileColumn, options: DataConfig) -> Column:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:VOCABULARY_LIMIT]
        if self.capped or len(self.counts) > VOCABULARY_LIMIT:
            logger.warning(
                "Column %r has more than %d distinct values in training; the rarest go to the "
                "out-of-vocabulary bucket.",
                c.source,
                VOCABULARY_LIMIT,
            )
        vocabulary = [k for k, _ in ranked]
        return Column(
            c.name,
            "categorical",
            text=c.text,
            fill=vocabulary[0],
            vocabulary=vocabulary,
            embedding_dim=_embedding_dim(len(vocabulary), options),
        )


class _TextStats:
    """Token counts of one text column over the training rows, in a capped
    counter (`TEXT_TOKEN_LIMIT`), and a uniform sample of its training rows
    for their lengths."""

    def __init__(self, options: DataConfig, seed: int):
        self.tokenizer = options.tokenizer
        self.limit = max(TEXT_TOKEN_LIMIT, 2 * options.vocabulary_size)
        self.rows = 0
        self.present = 0
        self.counts: collections.Counter = collections.Counter()
        self.capped = False
        self.sample: list[str] = []
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, values: Any, train: np.ndarray) -> None:
        """Counts the tokens of the training rows of ``values`` (a pyarrow
        string array, or an object array)."""
        if not isinstance(values, np.ndarray):
            import pyarrow as pa

            values = values.filter(pa.array(train)).to_numpy(zero_copy_only=False)
        else:
            values = values[train]
        self.rows += len(values)
        present = values[values != ""]
        self.present += len(present)
        if not len(present):
            return
        count_tokens(present, self.tokenizer, self.counts)
        if len(self.counts) > 2 * self.limit:
            self.counts = collections.Counter(dict(self.counts.most_common(self.limit)))
            self.capped = True
        for text in values.tolist():  # reservoir sampling, rows of "" included
            self.seen += 1
            if len(self.sample) < TEXT_LENGTH_SAMPLE:
                self.sample.append(text)
            else:
                slot = int(self.rng.integers(0, self.seen))
                if slot < TEXT_LENGTH_SAMPLE:
                    self.sample[slot] = text

    def column(self, c: FileColumn, options: DataConfig) -> Column:
        if self.capped:
            logger.warning(
                "Text column %r has more than %d distinct tokens in training; the counter kept "
                "the most frequent, so the rarest vocabulary entries are approximate.",
                c.source,
                self.limit,
            )
        vocabulary = vocabulary_from_counts(self.counts, self.tokenizer, options.vocabulary_size)
        if not vocabulary:
            raise DataError(
                message(
                    f"Text column {c.source!r} holds no token in its training rows (once "
                    "lower-cased and stripped of punctuation)",
                    allowed="Give the column words, or use data_options.tokenizer='character'",
                )
            )
        sample = np.array(self.sample, dtype=object)
        return Column(
            c.name,
            "text",
            text=True,
            fill="",
            vocabulary=vocabulary,
            tokenizer=self.tokenizer,
            lengths=row_lengths(sample, vocabulary, self.tokenizer),
        )


class _Progress:
    """Logs rows read, rows/s and the time left, every `PROGRESS_SECONDS`."""

    def __init__(self, tables: TableFiles):
        self.sizes = [os.path.getsize(f) for f in tables.files]
        self.total = sum(self.sizes) or 1
        self.start = self.last = time.monotonic()
        self.rows = 0
        self.done_bytes = 0

    def update(self, rows: int, file_index: int, file_done: bool = False) -> None:
        self.rows += rows
        if file_done:
            self.done_bytes += self.sizes[file_index]
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = now - self.start
        left = ""
        if self.done_bytes:
            seconds = elapsed * (self.total - self.done_bytes) / self.done_bytes
            left = f", about {seconds:,.0f} s left"
        logger.info(
            "Statistics pass: %s rows read (%s rows/s), %d of %d files done%s.",
            f"{self.rows:,}",
            f"{self.rows / max(elapsed, 1e-9):,.0f}",
            file_index + int(file_done),
            len(self.sizes),
            left,
        )


def _refuse_line_breaks(values: Any, c: FileColumn, path: str, position: int) -> None:
    """Refuses a CSV string value that holds a line break: the streamed
    reader parses the file line by line (`tf.io.decode_csv` on batches of
    lines), so such a row would be cut in two.

    Raises:
        DataError: Naming the file, the column and the first row.
    """
    import pyarrow.compute as pc

    broken = pc.match_substring_regex(values, "[\\r\\n]")
    if pc.any(broken).as_py():
        row = position + int(np.flatnonzero(broken.to_numpy(zero_copy_only=False))[0])
        raise DataError(
            message(
                f"Column {c.source!r} of the CSV file {path!r} holds a line break inside a "
                f"value (first in row {row}); a streamed CSV is read line by line, so that "
                "row would be cut in two",
                allowed="Replace the line breaks (e.g. by spaces), write the table as Parquet "
                "or TFRecord, or raise data_options.in_memory_mb above the file's size to "
                "read it whole",
            )
        )


def _statistics(
    tables: TableFiles,
    columns: list[FileColumn],
    label: FileColumn,
    key: FileColumn | None,
    options: DataConfig,
    seed: int,
) -> tuple[TabularEncoding, np.ndarray, np.ndarray, list[int], dict[str, float]]:
    """One pass over the files: the encoding (training rows only), every
    row's label and split code, each file's row count, each column's missing
    rate in training."""
    numeric = {c.source: _NumericStats(seed + i) for i, c in enumerate(columns)}
    categories: dict[str, Any] = {
        c.source: _TextStats(options, seed + i) if c.kind == "text" else _CategoryStats()
        for i, c in enumerate(columns)
    }
    wanted = [*columns, label] + ([key] if key is not None and key.source != label.source else [])
    wanted = list({c.source: c for c in wanted}.values())
    # As NumPy: the label and the key (hashed); text features stay pyarrow arrays.
    plain = {label.source} | ({key.source} if key is not None else set())
    labels, codes, counts = [], [], []
    text_labels: dict[Any, Any] = {}
    progress = _Progress(tables)
    for file_index, path in enumerate(tables.files):
        position = 0
        for batch in iter_file_batches(tables, path, wanted, arrow_text=True):
            batch = {
                k: v.to_numpy(zero_copy_only=False)
                if k in plain and not isinstance(v, np.ndarray)
                else v
                for k, v in batch.items()
            }
            n = len(batch[label.source])
            y = batch[label.source]
            missing_label = (y == "") if y.dtype == object else np.isnan(y.astype(np.float64))
            if missing_label.any():
                first = position + int(np.flatnonzero(missing_label)[0])
                raise DataError(
                    message(
                        f"Row {first} of the file {path!r} has no label in column {label.source!r}",
                        allowed="Remove the rows without a label",
                    )
                )
            if key is not None:
                hashes = key_hashes(batch[key.source])
            else:
                hashes = position_hashes(path, np.arange(position, position + n))
            code = split_codes(hashes, options)
            train = code == TRAIN
            for c in columns:
                values = batch[c.source]
                if c.text and tables.format == "csv":
                    _refuse_line_breaks(values, c, path, position)
                if options.impute == "error":
                    gap = (
                        values.to_numpy(zero_copy_only=False) == "" if c.text else np.isnan(values)
                    )
                    if gap.any():
                        raise DataError(
                            message(
                                f"Column {c.source!r} of the file {path!r} has a missing value "
                                f"in row {position + int(np.flatnonzero(gap)[0])} and "
                                "data_options.impute='error'",
                                allowed="Fill it, or use impute='auto'",
                            )
                        )
                if c.kind == "numeric":
                    numeric[c.source].add(values[train].astype(np.float64))
                else:
                    categories[c.source].add(values, train)
            labels.append(compact_labels(y, text_labels))
            codes.append(code)
            position += n
            progress.update(n, file_index)
        counts.append(position)
        progress.update(0, file_index, file_done=True)
    # NumPy promotes batches of mixed types to one that holds every value exactly.
    y = np.concatenate(labels) if labels else np.empty(0)
    del labels
    code = np.concatenate(codes) if codes else np.empty(0, np.int8)
    del codes
    if not len(y):
        raise DataError(
            message(f"The data ({tables.description}) has no rows", allowed="Give rows")
        )
    encoded, missing_rates = [], {}
    for c in columns:
        stats = numeric[c.source] if c.kind == "numeric" else categories[c.source]
        if stats.present == 0:
            raise DataError(
                message(
                    f"Column {c.source!r} of {tables.description} has no value in the "
                    f"{int((code == TRAIN).sum())} training rows, so nothing can be learned "
                    "to fill it",
                    allowed=f"Remove it (data_options.columns={{{c.source!r}: 'drop'}})",
                )
            )
        missing_rates[c.source] = 1.0 - stats.present / max(stats.rows, 1)
        encoded.append(stats.column(c, options))
    elapsed = time.monotonic() - progress.start
    classes, class_counts = np.unique(y[code == TRAIN], return_counts=True)
    if len(classes) <= CLASS_COUNT_LIMIT:  # labels of classes, not regression targets
        logger.info(
            "Training rows per label: %s.",
            dict(zip(classes.tolist(), class_counts.tolist())),
        )
    logger.info(
        "Statistics pass over %s: %s rows in %.1f s (%s rows/s); splits %s.",
        tables.description,
        f"{len(y):,}",
        elapsed,
        f"{len(y) / max(elapsed, 1e-9):,.0f}",
        {
            name: int((code == v).sum())
            for name, v in (("train", TRAIN), ("val", VAL), ("test", TEST))
        },
    )
    return TabularEncoding(encoded), y, code, counts, missing_rates


# --------------------------------------------------------------------------- tf.data


def _workers() -> int:
    """Workers of the cluster in ``TF_CONFIG`` (1 without one)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        return 1
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def shard_policy(files: int, workers: int, fmt: str) -> str:
    """How workers share a streamed table: `"FILE"` (each reads its own
    files) when there are at least as many files as workers and tf.data reads
    them with its own file readers (CSV, TFRecord), else `"DATA"` (every
    worker reads every file and keeps its share of the batches)."""
    return "FILE" if files >= workers and fmt in ("csv", "tfrecord") else "DATA"


class TableStream(Stream):
    """A table read from its files every epoch.

    Args:
        tables: The files.
        columns: The feature columns.
        counts: Rows of each file.
        encoding: The encoding learned by the statistics pass.
        code: Each row's split (`TRAIN`, `VAL` or `TEST`, one int8 a row):
            the only per-row state the stream keeps. The encoding was
            learned on the `TRAIN` rows, and a split's dataset keeps its rows
            by looking their code up, with no mask of its own.
        missing_rates: Each column's missing rate in training.
    """

    batched = True

    def __init__(
        self,
        tables: TableFiles,
        columns: list[FileColumn],
        counts: list[int],
        encoding: TabularEncoding,
        code: np.ndarray,
        missing_rates: dict[str, float],
    ):
        self.tables = tables
        self.columns = columns
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_rows = int(self.offsets[-1])
        self.example_shape = (len(columns),)
        self.description = tables.description
        self.encoding = encoding
        self.code = np.asarray(code, np.int8)
        self.split_sizes = {v: int(np.count_nonzero(self.code == v)) for v in (TRAIN, VAL, TEST)}
        self.missing_rates = missing_rates
        self._code_tensor: Any = None

    @property
    def train(self) -> np.ndarray:
        """The training rows the encoding was learned on (listed from the
        split codes on each call, not kept)."""
        return split_rows(self.code, TRAIN)

    def split_of(self, indices: np.ndarray) -> int | None:
        """The split code whose rows ``indices`` are, all of them once and in
        order, else None (other rows: a fold, a resampled training split).
        Checked a chunk at a time."""
        indices = np.asarray(indices)
        for value, size in self.split_sizes.items():
            if len(indices) != size:
                continue
            last = -1
            for start in range(0, size, ROW_CHUNK):
                chunk = indices[start : start + ROW_CHUNK]
                if chunk[0] <= last or np.any(chunk[1:] <= chunk[:-1]):
                    break
                if np.any(self.code[chunk] != value):
                    break
                last = chunk[-1]
            else:
                return value
        return None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def shard_policy(self) -> str:
        """`"FILE"` or `"DATA"` (see `shard_policy`)."""
        return shard_policy(len(self.tables.files), _workers(), self.tables.format)

    def encoding_for(self, train: np.ndarray) -> TabularEncoding:
        """The encoding, when ``train`` are the rows it was learned on.

        Raises:
            DataError: For other training rows (cross-validation folds): their
                statistics would need another pass over the files.
        """
        if self.split_of(train) != TRAIN:
            raise DataError(
                message(
                    f"{self.description} is streamed, and its statistics were computed on its "
                    "hash split's training rows; other training rows (cross-validation folds) "
                    "are not supported while streaming",
                    allowed="Raise data_options.in_memory_mb to load it in memory, or train "
                    "with the hash split",
                )
            )
        return self.encoding

    def _parsed(self, shuffle: bool, seed: int | None) -> Any:
        """`(global row index, columns)` batches of every file, parsed."""
        from kerastrain._keras import tf

        fmt = self.tables.format
        files = tf.constant(self.tables.files)
        offsets = tf.constant(self.offsets[:-1], tf.int64)
        ds = tf.data.Dataset.from_tensor_slices((files, offsets))
        if shuffle:
            ds = ds.shuffle(len(self.tables.files), seed=seed, reshuffle_each_iteration=True)
        if fmt == "csv":
            read = self._csv_reader()
        elif fmt == "tfrecord":
            read = self._tfrecord_reader()
        else:
            read = self._parquet_reader()
        cycle = min(len(self.tables.files), PARQUET_OPEN if fmt == "parquet" else 4)
        if fmt == "parquet":
            # Each open Parquet file holds a decoded row group, and a parallel
            # interleave opens as many files again ahead of need: at most
            # `cycle` files are open here (pyarrow decodes on its own threads),
            # in a deterministic order; the batches are prefetched.
            ds = ds.interleave(read, cycle_length=cycle if shuffle else 1)
            return ds.prefetch(tf.data.AUTOTUNE)
        # Sharded by record (DATA), every worker must see the batches in the
        # same order to keep its own share: then the order is deterministic.
        # Unshuffled (evaluation, prediction), the files are read one after
        # the other, so the rows come in their order, as the split lists them
        # (whoever pairs outputs with labels by position needs that); each
        # file's batches are still parsed in parallel.
        return ds.interleave(
            read,
            cycle_length=cycle if shuffle else 1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle or self.shard_policy() == "DATA",
        )

    def _csv_reader(self) -> Any:
        import pandas as pd

        from kerastrain._keras import tf

        first = self.tables.files[0]
        sep = "\t" if first.lower().endswith(".tsv") else ","
        header = [
            str(c) for c in pd.read_csv(first, sep=sep, nrows=0, skipinitialspace=True).columns
        ]
        at = {name: i for i, name in enumerate(header)}
        chosen = sorted(self.columns, key=lambda c: at[c.source])
        select = [at[c.source] for c in chosen]
        defaults = [
            tf.constant("", tf.string) if c.text else tf.constant(np.nan, tf.float32)
            for c in chosen
        ]

        def parse(position: Any, lines: Any) -> Any:
            values = tf.io.decode_csv(lines, defaults, field_delim=sep, select_cols=select)
            return position, {c.name: v for c, v in zip(chosen, values)}

        def number(count: Any, lines: Any) -> Any:
            lines = tf.boolean_mask(lines, tf.strings.length(lines) > 0)  # blank lines
            n = tf.size(lines, out_type=tf.int64)
            return count + n, (count + tf.range(n, dtype=tf.int64), lines)

        def read(path: Any, offset: Any) -> Any:
            # Batches of lines, not lines: tf.data's cost is per element.
            lines = tf.data.TextLineDataset(path, buffer_size=1 << 20).skip(1).batch(PARSE_ROWS)
            lines = lines.scan(tf.constant(0, tf.int64), number)
            return lines.map(
                lambda p, text: parse(p + offset, text), num_parallel_calls=tf.data.AUTOTUNE
            )

        return read

    def _tfrecord_reader(self) -> Any:
        from kerastrain._keras import tf

        types = {"bytes": tf.string, "int64": tf.int64}
        spec = {
            c.source: tf.io.FixedLenFeature([], types.get(c.dtype, tf.float32))
            for c in self.columns
        }

        def parse(position: Any, records: Any) -> Any:
            parsed = tf.io.parse_example(records, spec)
            return position, {
                c.name: parsed[c.source] if c.text else tf.cast(parsed[c.source], tf.float32)
                for c in self.columns
            }

        def read(path: Any, offset: Any) -> Any:
            # Every batch but the last is full: batch b starts at b * PARSE_ROWS.
            records = tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(PARSE_ROWS)

            def positions(b: Any, r: Any) -> Any:
                start = offset + b * PARSE_ROWS
                return parse(start + tf.range(tf.size(r, out_type=tf.int64)), r)

            return records.enumerate().map(positions, num_parallel_calls=tf.data.AUTOTUNE)

        return read

    def _parquet_reader(self) -> Any:
        from kerastrain._keras import tf

        tables, columns = self.tables, self.columns

        def batches(path: bytes) -> Any:
            position = 0
            for batch in iter_file_batches(
                tables, path.decode(), columns, batch_rows=8 * PARSE_ROWS
            ):
                n = len(batch[columns[0].source])
                yield (
                    np.arange(position, position + n, dtype=np.int64),
                    {
                        c.name: batch[c.source] if c.text else batch[c.source].astype(np.float32)
                        for c in columns
                    },
                )
                position += n

        signature = (
            tf.TensorSpec([None], tf.int64),
            {c.name: tf.TensorSpec([None], tf.string if c.text else tf.float32) for c in columns},
        )

        def read(path: Any, offset: Any) -> Any:
            ds = tf.data.Dataset.from_generator(batches, output_signature=signature, args=(path,))
            # Blocks of PARSE_ROWS as the other formats': the shuffle buffer
            # holds SHUFFLE_ROWS rows, not eight times as many.
            return ds.map(lambda p, x: (p + offset, x)).rebatch(PARSE_ROWS)

        return read

    def batches(
        self, indices: np.ndarray, batch_size: int, *, shuffle: bool, seed: int | None = None
    ) -> Any:
        """Batches of `(row indices, columns)` of the rows ``indices``.

        Args:
            indices: The rows to read (a split).
            batch_size: Rows per batch.
            shuffle: Shuffle the files' order and the rows (in a buffer of
                `SHUFFLE_ROWS`), differently every epoch.
            seed: The shuffle seed. Defaults to `None`.
        """
        from kerastrain._keras import tf

        split = self.split_of(indices)
        if split is not None:
            # A whole split: its rows are looked up in the one code array
            # every split shares (one byte a row for the whole table).
            if self._code_tensor is None:
                self._code_tensor = tf.constant(self.code)
            code, value = self._code_tensor, tf.constant(split, tf.int8)

            def member(position: Any) -> Any:
                return tf.equal(tf.gather(code, position), value)

        else:
            chosen = np.zeros(self.num_rows, bool)
            chosen[np.asarray(indices)] = True
            chosen = tf.constant(chosen)

            def member(position: Any) -> Any:
                return tf.gather(chosen, position)

        def keep(position: Any, x: Any) -> Any:
            mask = member(position)
            return tf.boolean_mask(position, mask), {
                k: tf.boolean_mask(v, mask) for k, v in x.items()
            }

        ds = self._parsed(shuffle, seed).map(keep, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            # Parsed blocks wait in a buffer of SHUFFLE_ROWS rows; MIX_BLOCKS of
            # them drawn at random are pooled and their rows permuted, then cut
            # into batches: no per-row tf.data element.
            blocks = max(1, SHUFFLE_ROWS // PARSE_ROWS)
            ds = ds.shuffle(blocks, seed=seed, reshuffle_each_iteration=True)
            ds = ds.ragged_batch(MIX_BLOCKS)

            def mix(position: Any, x: Any) -> Any:
                position = position.flat_values
                # Seeded by the pool's rows, which the seeded buffer changes
                # every epoch (no random source beside the files: a worker's
                # share by file needs the files to be the only source).
                draw = tf.math.reduce_sum(position * 2654435761) + tf.size(position, tf.int64)
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.size(position)),
                    seed=tf.stack([draw, tf.constant(seed or 0, tf.int64)]),
                )
                return tf.gather(position, order), {
                    k: tf.gather(v.flat_values, order) for k, v in x.items()
                }

            ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.rebatch(batch_size)
        rows = len(indices)
        return ds.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))

    def examples(self, indices: np.ndarray, *, shuffle: bool, seed: int | None = None):
        return self.batches(indices, PARSE_ROWS, shuffle=shuffle, seed=seed).unbatch()

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of the rows ``indices``, read from the files that hold
        them (those files only, up to the last row needed)."""
        indices = np.asarray(indices, np.int64)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        out = {
            c.name: np.empty(len(indices), object if c.text else np.float32) for c in self.columns
        }
        first = (
            int(np.searchsorted(self.offsets, wanted[0], side="right")) - 1 if len(wanted) else 0
        )
        last = (
            int(np.searchsorted(self.offsets, wanted[-1], side="right")) - 1 if len(wanted) else -1
        )
        for f in range(first, last + 1):
            start, stop = int(self.offsets[f]), int(self.offsets[f + 1])
            lo, hi = np.searchsorted(wanted, [start, stop])
            if lo == hi:
                continue
            local = wanted[lo:hi] - start
            position = 0
            for batch in iter_file_batches(self.tables, self.tables.files[f], self.columns):
                n = len(batch[self.columns[0].source])
                a, b = np.searchsorted(local, [position, position + n])
                if a < b:
                    at = order[lo + a : lo + b]
                    for c in self.columns:
                        out[c.name][at] = batch[c.source][local[a:b] - position]
                position += n
                if position > local[-1]:
                    break
        return out


# --------------------------------------------------------------------------- entry


def _log_split(options: DataConfig, key: FileColumn | None) -> None:
    by = (
        f"a hash of the split_key column {key.source!r}"
        if key is not None
        else "a hash of each row's file name and position"
    )
    logger.info(
        "The streamed table is split by %s (the same rows every run); stratification is not "
        "possible while streaming%s.",
        by,
        " (data_options.stratify is ignored)" if options.stratify else "",
    )


def read_table_files(
    tables: TableFiles, options: DataConfig, seed: int = 0
) -> tuple[Any, np.ndarray, Table, dict[str, np.ndarray] | None]:
    """Reads a table from its files, in memory or as a stream.

    Args:
        tables: The files.
        options: `target`, `columns`, `split_key`, `in_memory_mb`, the
            encoding options.
        seed: Seeds the statistics pass's median sample. Defaults to `0`.

    Returns:
        The features (a dict of column arrays, or a `TableStream`), the raw
        labels, the table's description, and the splits fixed by the hash
        (train, val, test row indices) when the table is streamed or has a
        `split_key`, else None (split as any table).

    Raises:
        DataError: For a split key or target that is not a column, files that
            disagree on a column, a value that cannot be read (naming the file
            and the column).
    """
    columns, label, key = file_schema(tables, options)
    size = tables.size_mb()
    if options.split == "time":
        streamed = size > options.in_memory_mb
        if streamed:
            raise DataError(
                message(
                    f"data_options.split='time' needs every row in time order, and "
                    f"{tables.description} ({size:,.0f} MiB) is streamed",
                    received={"data_options.in_memory_mb": options.in_memory_mb},
                    allowed="Use split='random' (a hash split, with split_key to keep related "
                    "rows together), or raise in_memory_mb to load it in memory",
                )
            )
    if size <= options.in_memory_mb:
        wanted = [*columns, label] + ([key] if key is not None else [])
        wanted = list({c.source: c for c in wanted}.values())
        frame = read_frame(tables, wanted)
        keys = frame[key.source].to_numpy() if key is not None else None
        frame = frame[[c.source for c in columns] + [label.source]]
        # The kinds the schema found (a file's integers read as float64 would
        # otherwise all look numeric), and no dropped column to look for.
        kinds = dataclasses.replace(options, columns={c.source: c.kind for c in columns})
        x, y, table = read_table(frame, kinds, source=tables.description)
        parts = None
        if keys is not None:
            if len(table.dropped_rows):
                keys = np.delete(keys, table.dropped_rows)
            code = split_codes(key_hashes(keys), options)
            parts = {
                name: np.flatnonzero(code == v)
                for name, v in (("train", TRAIN), ("val", VAL), ("test", TEST))
            }
        logger.info(
            "Table %s: %.1f MiB, at most data_options.in_memory_mb=%g: read into memory.",
            tables.description,
            size,
            options.in_memory_mb,
        )
        return x, y, table, parts
    if options.impute == "drop":
        raise DataError(
            message(
                f"{tables.description} ({size:,.0f} MiB) is streamed, and impute='drop' would "
                "change which row is where",
                received={"data_options.impute": options.impute},
                allowed="Use impute='auto' (the missing values are filled inside the model), or "
                "raise data_options.in_memory_mb",
            )
        )
    logger.info(
        "Table %s: %.1f MiB, over data_options.in_memory_mb=%g: streamed from its files "
        "(one statistics pass, then read every epoch).",
        tables.description,
        size,
        options.in_memory_mb,
    )
    _log_split(options, key)
    encoding, y, code, counts, missing_rates = _statistics(
        tables, columns, label, key, options, seed
    )
    parts = {
        name: split_rows(code, v) for name, v in (("train", TRAIN), ("val", VAL), ("test", TEST))
    }
    stream = TableStream(tables, columns, counts, encoding, code, missing_rates)
    table = Table(
        columns={c.name: c.kind for c in columns}, sources={c.name: c.source for c in columns}
    )
    return stream, y, table, parts


def streamed_table_facts(stream: TableStream) -> dict[str, Any]:
    """Facts about a streamed table for the report."""
    return {
        "read": f"streamed from {len(stream.tables.files)} {stream.tables.format} file(s) every "
        f"epoch (shuffle buffer {SHUFFLE_ROWS:,} rows)",
        "split": "stable hash (split_key or file and position); not stratified",
        "workers' share": "by file" if stream.shard_policy() == "FILE" else "by record",
        "missing rate (training)": {k: round(v, 4) for k, v in stream.missing_rates.items() if v},
    }
