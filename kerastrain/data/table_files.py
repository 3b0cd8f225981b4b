"""Tables kept in files: CSV, Parquet and TFRecord (`tf.train.Example`).

``data`` may name one file, a glob (``"data/part-*.parquet"``) or a folder
holding files of one of these formats. This module finds the files, reads the
column types (the Parquet schema, the first TFRecord records, a sample of the
CSV rows, or ``data_options.columns``), checks that every file agrees, and
reads any file as batches of column arrays in Python (numbers as float64 with
NaN where missing, categories as strings with ``""`` where missing), which the
statistics pass and the in-memory path use. `tf.data` reads the same files
for training (see `kerastrain.data.table_stream`).

It also holds the stable hash split of file tables: a row's split comes from
a hash of its ``data_options.split_key`` value (or of its file name and
position), so it is the same on every run, in memory or streamed.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.images import IMAGE_EXTENSIONS
from kerastrain.data.tabular import _column, _infer_kind, _input_name
from kerastrain.errors import DataError, message

__all__ = [
    "FORMATS",
    "TableFiles",
    "FileColumn",
    "find_table_files",
    "file_schema",
    "iter_file_batches",
    "key_hashes",
    "position_hashes",
    "split_codes",
    "read_frame",
]

#: File name endings of table files and their format.
FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
}
#: Rows read from the first file to infer column types (CSV, TFRecord).
SAMPLE_ROWS = 2000
#: Rows per batch when reading files in Python.
READ_ROWS = 65536
#: Bytes read from a Parquet file at a time while its pages are decoded. A
#: file is opened without pre-buffering (pyarrow's default reads a row
#: group's column chunks whole and keeps them beside the decoded columns,
#: about twice the row group's size for each file open at once).
PARQUET_BUFFER = 1 << 20
#: Split codes.
TRAIN, VAL, TEST = 0, 1, 2


@dataclasses.dataclass
class TableFiles:
    """The files of one table.

    Attributes:
        files: The files, sorted by path.
        format: `"csv"`, `"parquet"` or `"tfrecord"`.
        pattern: What the user passed (a file, a glob or a folder).
    """

    files: list[str]
    format: str
    pattern: str

    @property
    def description(self) -> str:
        count = len(self.files)
        return f"{self.format} {self.pattern}" + (f" ({count} files)" if count > 1 else "")

    def size_mb(self) -> float:
        """The table's size in memory, estimated: the files' sizes, or for
        Parquet (compressed) the uncompressed size its metadata states."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            total = 0
            for f in self.files:
                meta = pq.ParquetFile(f).metadata
                total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return total / 2**20
        return sum(os.path.getsize(f) for f in self.files) / 2**20


@dataclasses.dataclass
class FileColumn:
    """One column of a file table.

    Attributes:
        source: The column's name in the files.
        name: The model input's name.
        kind: `"numeric"`, `"categorical"` or `"text"` (free text).
        text: The values are strings (else numbers, read as float32).
        dtype: For TFRecord: the feature's type (`"float"`, `"int64"`,
            `"bytes"`); for the label and key columns of CSV and Parquet, the
            sample's NumPy kind.
    """

    source: str
    name: str
    kind: str
    text: bool
    dtype: str = ""


def _format(path: str) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def find_table_files(data: Any) -> TableFiles | None:
    """The table files ``data`` names, or None when it names none (an image
    folder, a ``.txt`` CSV file, a built-in data set's name).

    Raises:
        DataError: For a glob that matches no file, or files of more than one
            format.
    """
    if not isinstance(data, (str, os.PathLike)):
        return None
    text = str(data)
    path = Path(text)
    if path.is_file():
        fmt = _format(text)
        return TableFiles([text], fmt, text) if fmt else None
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file()]
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in found):
            return None  # an image folder (a labels.csv beside the images is no table)
        files = sorted(str(p) for p in found if _format(str(p)))
        if not files:
            return None
    elif any(c in text for c in "*?["):
        files = sorted(f for f in glob.glob(text, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(
                message(
                    f"The glob {text!r} matches no file",
                    received={"data": text},
                    allowed="Check the pattern (relative paths start at the working directory "
                    f"{os.getcwd()!r}); table files end in {', '.join(FORMATS)}",
                )
            )
    else:
        return None
    formats = {_format(f) for f in files}
    if None in formats or len(formats) > 1:
        odd = sorted(formats - {None}) + (["other"] if None in formats else [])
        raise DataError(
            message(
                f"{text!r} holds files of more than one kind ({', '.join(odd)}): "
                + ", ".join(repr(f) for f in files[:3])
                + (", ..." if len(files) > 3 else ""),
                allowed="Keep one format per table (CSV, Parquet or TFRecord files), or name "
                "the files with a glob",
            )
        )
    return TableFiles(files, formats.pop(), text)


# --------------------------------------------------------------------------- schema


def _number_class(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_dictionary(arrow_type):
        return _number_class(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


def _check_parquet_parts(tables: TableFiles, names: list[str]) -> None:
    """Refuses a part missing a column, or holding it with another type."""
    import pyarrow.parquet as pq

    first = pq.read_schema(tables.files[0])
    expected = {n: _number_class(first.field(n).type) for n in names}
    for f in tables.files[1:]:
        schema = pq.read_schema(f)
        for name in names:
            if name not in schema.names:
                raise DataError(
                    message(
                        f"The Parquet file {f!r} has no column {name!r}, which "
                        f"{tables.files[0]!r} has",
                        allowed="Give every part the same columns",
                    )
                )
            found = _number_class(schema.field(name).type)
            if found != expected[name]:
                raise DataError(
                    message(
                        f"Column {name!r} of the Parquet file {f!r} holds {schema.field(name).type} "
                        f"values, but in {tables.files[0]!r} it holds "
                        f"{first.field(name).type}",
                        allowed="Write the column with one type in every part",
                    )
                )


def _tfrecord_sample(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    """The first ``rows`` records of a TFRecord file as a DataFrame, and each
    feature's type (`"float"`, `"int64"`, `"bytes"`)."""
    import pandas as pd

    from kerastrain._keras import tf

    kinds: dict[str, str] = {}
    records = []
    try:
        for raw in tf.data.TFRecordDataset(path).take(rows).as_numpy_iterator():
            example = tf.train.Example.FromString(raw)
            record = {}
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = getattr(feature, kind).value if kind else []
                if len(values) > 1:
                    raise DataError(
                        message(
                            f"Feature {name!r} of the TFRecord file {path!r} holds "
                            f"{len(values)} values in record {len(records)}; a table's "
                            "feature holds one value per record",
                            allowed="Write one value per feature (a column per value)",
                        )
                    )
                kinds.setdefault(name, kind or "float")
                value = values[0] if len(values) else None
                record[name] = value.decode("utf-8", "replace") if kind == "bytes_list" else value
            records.append(record)
    except tf.errors.OpError as exc:
        raise DataError(message(f"Cannot read the TFRecord file {path!r}: {exc.message}")) from None
    frame = pd.DataFrame.from_records(records)
    for name, kind in kinds.items():
        if kind == "int64_list" and frame[name].notna().all():
            frame[name] = frame[name].astype(np.int64)
    types = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}
    return frame, {n: types[k] for n, k in kinds.items()}


def _sample(tables: TableFiles) -> tuple[Any, dict[str, str]]:
    import pandas as pd

    first = tables.files[0]
    if tables.format == "csv":
        sep = "\t" if first.lower().endswith(".tsv") else ","
        try:
            frame = pd.read_csv(first, sep=sep, nrows=SAMPLE_ROWS, skipinitialspace=True)
        except (OSError, ValueError) as exc:
            raise DataError(message(f"Cannot read the CSV file {first!r}: {exc}")) from None
        header = list(frame.columns)
        for f in tables.files[1:]:
            other = list(pd.read_csv(f, sep=sep, nrows=0, skipinitialspace=True).columns)
            if other != header:
                missing = [c for c in header if c not in other] or [
                    c for c in other if c not in header
                ]
                raise DataError(
                    message(
                        f"The CSV file {f!r} has other columns than {first!r}"
                        + (f" (column {missing[0]!r})" if missing else " (in another order)"),
                        allowed="Give every file the same header",
                    )
                )
        return frame, {}
    if tables.format == "parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(first).iter_batches(batch_size=SAMPLE_ROWS), None)
        if batch is None:
            schema = pq.read_schema(first)
            return pd.DataFrame({n: [] for n in schema.names}), {}
        return batch.to_pandas(), {}
    return _tfrecord_sample(first, SAMPLE_ROWS)


def file_schema(
    tables: TableFiles, options: DataConfig
) -> tuple[list[FileColumn], FileColumn, FileColumn | None]:
    """The feature columns, the label column and the split key column.

    Raises:
        DataError: For a target or split key that is not a column, a column
            named in `columns` that is not there, a Parquet part whose column
            has another type, CSV files with different headers.
    """
    frame, feature_types = _sample(tables)
    first = tables.files[0]
    names = [str(c) for c in frame.columns]
    listed = f"Its columns are {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}"
    target = options.target
    if target is None:
        raise DataError(
            message(
                f"The data ({tables.description}) is a table but no label column was named",
                received={"data_options.target": target},
                allowed=f"Set data_options.target to one of its columns. {listed}",
            )
        )
    for option, name in (
        ("target", target),
        ("split_key", options.split_key),
        *(("columns", c) for c in options.columns),
        *(("text_columns", c) for c in options.text_columns),
    ):
        if name is not None and name not in names:
            raise DataError(
                message(
                    f"data_options.{option}={name!r} is not a column of the file {first!r}",
                    allowed=listed,
                    candidates=names,
                    near=name,
                )
            )
    if tables.format == "parquet":
        _check_parquet_parts(tables, names)
    columns = []
    taken: set[str] = set()
    for column in names:
        if column == target or options.columns.get(column) == "drop":
            continue
        values, missing = _column(frame, column)
        declared = options.columns.get(column) or (
            "text" if column in options.text_columns else None
        )
        if missing.all() and not declared:
            kind = "numeric" if values.dtype.kind in "fiub" else "categorical"
        else:
            try:
                kind = declared or _infer_kind(column, values, missing, None)
            except DataError as exc:
                raise DataError(f"In the file {first!r}: {exc}") from None
        strings = kind in ("categorical", "text")  # read as strings, not numbers
        text = values.dtype.kind not in "fiub" and strings
        if feature_types:
            text = feature_types.get(column) == "bytes" and strings
        columns.append(
            FileColumn(
                column, _input_name(column, taken), kind, text, feature_types.get(column, "")
            )
        )
    if not columns:
        raise DataError(
            message(
                f"The data ({tables.description}) has no feature columns besides the target "
                f"{target!r}",
                allowed="Keep at least one column that is not 'drop'",
            )
        )

    def special(name: str) -> FileColumn:
        kind = frame[name].dtype.kind
        dtype = feature_types.get(name) or {"i": "int64", "u": "int64", "f": "float"}.get(
            kind, "bool" if kind == "b" else "bytes"
        )
        return FileColumn(name, name, "label", dtype == "bytes", dtype)

    key = special(options.split_key) if options.split_key is not None else None
    return columns, special(target), key


# --------------------------------------------------------------------------- reading in Python


def _arrow_column(array: Any, column: FileColumn, arrow_text: bool) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.text:
        text = pc.fill_null(pc.cast(array, pa.string()), "")
        return text if arrow_text else text.to_numpy(zero_copy_only=False)
    if column.dtype in ("int64",) and array.null_count == 0:
        return array.to_numpy(zero_copy_only=False)
    return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _arrow_type(column: FileColumn) -> Any:
    import pyarrow as pa

    if column.text:
        return pa.string()
    return {"int64": pa.int64(), "bool": pa.bool_()}.get(column.dtype, pa.float64())


def _csv_batches(path: str, wanted: list[FileColumn]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sep = "\t" if path.lower().endswith(".tsv") else ","
    convert = pacsv.ConvertOptions(
        column_types={c.source: _arrow_type(c) for c in wanted},
        include_columns=[c.source for c in wanted],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=convert,
        )
        yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc)
        found = re.search(r"CSV column #(\d+)", text)
        column = ""
        if found:
            import pandas as pd

            header = list(pd.read_csv(path, sep=sep, nrows=0, skipinitialspace=True).columns)
            index = int(found.group(1))
            column = f", column {header[index]!r}" if index < len(header) else ""
        raise DataError(
            message(
                f"Cannot read the CSV file {path!r}{column}: {text}",
                allowed="Correct the value, leave it empty to have it imputed, or declare the "
                "column's kind in data_options.columns",
            )
        ) from None


def _tfrecord_batches(path: str, wanted: list[FileColumn]) -> Iterator[dict[str, np.ndarray]]:
    from kerastrain._keras import tf

    spec = {c.source: tf.io.FixedLenFeature([], _tf_feature_type(c)) for c in wanted}
    ds = tf.data.TFRecordDataset(path).batch(READ_ROWS).map(lambda r: tf.io.parse_example(r, spec))
    try:
        for batch in ds.as_numpy_iterator():
            out = {}
            for c in wanted:
                values = batch[c.source]
                if values.dtype == object:
                    values = np.array([v.decode("utf-8", "replace") for v in values], object)
                out[c.source] = values
            yield out
    except tf.errors.InvalidArgumentError as exc:
        found = re.search(r"Feature: (\S+) \(data type: (\w+)\) is required", exc.message)
        if found:
            raise DataError(
                message(
                    f"Feature {found.group(1)!r} is missing from some records of the TFRecord "
                    f"file {path!r}",
                    allowed="Write every feature in every record (a missing value as NaN, or an "
                    "empty string for a category)",
                )
            ) from None
        found = re.search(r"Name: [^,]*, Key: (\S+?),", exc.message)
        name = f", feature {found.group(1)!r}" if found else ""
        raise DataError(
            message(
                f"Cannot read the TFRecord file {path!r}{name}: {exc.message}",
                allowed="Write each feature with one type in every file",
            )
        ) from None


def _tf_feature_type(column: FileColumn) -> Any:
    from kerastrain._keras import tf

    return {"bytes": tf.string, "int64": tf.int64}.get(column.dtype, tf.float32)


def iter_file_batches(
    tables: TableFiles,
    path: str,
    wanted: list[FileColumn],
    *,
    arrow_text: bool = False,
    batch_rows: int = READ_ROWS,
) -> Iterator[dict[str, Any]]:
    """The columns ``wanted`` of one file, batch by batch, in row order.

    Numbers come as float64 (NaN where missing; int64 for integer label or
    key columns without gaps), categories as strings (``""`` where missing):
    a NumPy object array, or with ``arrow_text`` a pyarrow string array
    (counted without making Python strings).

    Raises:
        DataError: Naming the file and the column that cannot be read.
    """
    if tables.format == "tfrecord":
        import pyarrow as pa

        for batch in _tfrecord_batches(path, wanted):
            yield {
                c.source: (
                    pa.array(batch[c.source], pa.string()) if arrow_text else batch[c.source]
                )
                if c.text
                else _plain(batch[c.source], c)
                for c in wanted
            }
        return
    if tables.format == "parquet":
        batches = _open_parquet(path).iter_batches(
            batch_size=batch_rows, columns=[c.source for c in wanted]
        )
    else:
        batches = _csv_batches(path, wanted)
    for batch in batches:
        yield {c.source: _arrow_column(batch.column(c.source), c, arrow_text) for c in wanted}


def _open_parquet(path: str) -> Any:
    """A `pyarrow.parquet.ParquetFile` read a page at a time: no
    pre-buffering of whole column chunks, `PARQUET_BUFFER` bytes a read."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_BUFFER)


def _plain(values: np.ndarray, column: FileColumn) -> np.ndarray:
    if column.kind == "label" and column.dtype == "int64":
        return values
    return values.astype(np.float64)


def read_frame(tables: TableFiles, columns: list[FileColumn]) -> Any:
    """Every row of the files as one DataFrame (the in-memory path)."""
    import pandas as pd

    parts = []
    for path in tables.files:
        for batch in iter_file_batches(tables, path, columns):
            parts.append(pd.DataFrame({c.source: batch[c.source] for c in columns}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for c in columns:
        if c.text:  # "" is missing, as a DataFrame's None
            frame[c.source] = frame[c.source].replace("", None)
    return frame


# --------------------------------------------------------------------------- hash splits


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: well-spread 64-bit hashes of 64-bit integers."""
    h = h.astype(np.uint64)
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def key_hashes(values: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash of each split key value: numbers by their float64
    value (so ``7`` in a CSV and ``7.0`` in Parquet agree), else their text."""
    import pandas as pd

    values = np.asarray(values)
    if values.dtype.kind in "fiub":
        values = values.astype(np.float64)
    else:
        values = np.array(["" if v is None else str(v) for v in values], dtype=object)
    return _mix(pd.util.hash_array(values, categorize=False))


def position_hashes(path: str, positions: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash of (file name, row position in the file)."""
    name = np.uint64(zlib.crc32(Path(path).name.encode()))
    with np.errstate(over="ignore"):
        return _mix((name << np.uint64(40)) ^ positions.astype(np.uint64))


def split_codes(hashes: np.ndarray, options: DataConfig) -> np.ndarray:
    """`TRAIN`, `VAL` or `TEST` for each hash: the test share first, then
    validation, so raising `validation_split` never moves a test row."""
    u = (hashes >> np.uint64(11)).astype(np.float64) / float(2**53)
    codes = np.full(len(hashes), TRAIN, np.int8)
    codes[u < options.test_split + options.validation_split] = VAL
    codes[u < options.test_split] = TEST
    return codes
