"""The per-row state a streamed table keeps: its bytes a row stay small.

A streamed table's memory grows with its rows only through the arrays kept
for them (labels, split rows, split codes). These tests hold their dtypes
and bytes a row, and the reads and copies the run no longer makes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerastrain._keras import tf
from kerastrain.config import DataConfig
from kerastrain.data import table_stream
from kerastrain.data.audit import audit_data
from kerastrain.data.feed import InMemory, make_dataset
from kerastrain.data.prepare import prepare_data
from kerastrain.data.split import Splits, fixed_splits, split_indices
from kerastrain.data.table_files import TRAIN, VAL
from kerastrain.data.table_stream import TableStream, compact_labels, split_rows
from kerastrain.task import Task

#: Forces streaming: every generated table is larger than this.
TINY_MB = 0.001
ROWS = 2000
#: Bytes a row of every per-row array a streamed binary table keeps after the
#: data stage: int32 labels (4), int32 split rows (4), int8 split codes (1).
#: Before: int64 split rows (8) and an int64 copy of the training rows (5.6).
MAX_BYTES_PER_ROW = 9.5


def _pattern(tmp_path, labels: np.ndarray | None = None) -> str:
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=ROWS)
    colour = rng.choice(["red", "green", "blue"], size=ROWS)
    label = (x1 + (colour == "red") > 0.3).astype(np.int64) if labels is None else labels
    frame = pd.DataFrame({"x1": x1, "colour": colour, "label": label})
    folder = tmp_path / "data"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        frame.iloc[part].to_csv(folder / f"part-{i}.csv", index=False)
    return str(folder / "part-*.csv")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pattern = _pattern(tmp_path_factory.mktemp("stream"))
    return prepare_data(pattern, DataConfig(target="label", in_memory_mb=TINY_MB), seed=0)


def test_a_streamed_table_keeps_few_bytes_a_row(prepared):
    stream = prepared.x
    assert isinstance(stream, TableStream)
    assert stream.code.dtype == np.int8 and stream.code.shape == (ROWS,)
    s = prepared.splits
    for rows in (s.train, s.val, s.test):
        assert rows.dtype == np.int32
    kept = [prepared.y, s.train, s.val, s.test, stream.code]
    per_row = sum(a.nbytes for a in kept) / ROWS
    assert per_row <= MAX_BYTES_PER_ROW, per_row
    # No other array of the table's length hangs on the stream.
    longer = [k for k, v in vars(stream).items() if isinstance(v, np.ndarray) and v.size >= ROWS]
    assert longer == ["code"]


def test_the_feed_holds_labels_compact_and_gives_them_back_as_they_were(prepared):
    memory = InMemory(prepared.x, prepared.y)
    assert memory.y.dtype == tf.int8  # binary float32 0/1 labels, one byte each
    assert memory.y_dtype == tf.float32
    ds = make_dataset(memory, prepared.splits.val, 256, training=False)
    assert ds.element_spec[1].dtype == tf.float32
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(labels, prepared.y[prepared.splits.val])


def _cached(ds) -> bool:
    """Whether a `tf.data` pipeline has a `cache` step."""
    seen, todo = set(), [ds]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        if "Cache" in type(d).__name__:
            return True
        todo.extend(d._inputs())
    return False


def test_held_out_splits_of_a_streamed_table_are_read_again_not_cached(prepared):
    memory = InMemory(prepared.x, prepared.y)
    assert not _cached(make_dataset(memory, prepared.splits.test, 256, training=False))
    # In-memory data of the same size still is.
    arrays = InMemory(np.zeros((ROWS, 2), np.float32), prepared.y)
    assert _cached(make_dataset(arrays, prepared.splits.test, 256, training=False))


def test_whole_splits_are_recognised_and_other_rows_are_not(prepared):
    stream, s = prepared.x, prepared.splits
    assert stream.split_of(s.train) == TRAIN
    assert stream.split_of(s.val.astype(np.int64)) == VAL
    assert stream.split_of(s.train[:-1]) is None  # a part of a split
    assert stream.split_of(s.train[::-1]) is None  # out of order
    np.testing.assert_array_equal(stream.train, s.train)
    # A fold's rows read through a mask of their own: exactly those rows.
    rows = s.train[::3]
    ds = stream.batches(rows, 128, shuffle=False)
    read = np.concatenate([i for i, _ in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(read, rows)


def test_the_audit_reads_a_streamed_table_once(prepared):
    stream = prepared.x
    calls = []
    read = stream.read
    stream.read = lambda indices: calls.append(len(indices)) or read(indices)
    try:
        quality = audit_data(
            stream,
            prepared.y,
            prepared.task,
            prepared.splits,
            table=prepared.table,
            sample_rows=500,
        )
    finally:
        del stream.read
    assert len(calls) == 1
    assert quality.rows_hashed == 500 and quality.rows_sampled == 500


def test_fixed_splits_keep_sorted_int32_rows_as_the_carving_would(prepared):
    s = prepared.splits
    parts = {"train": s.train, "val": s.val, "test": s.test}
    task = Task("binary", 2)
    kept = fixed_splits(prepared.y, task, DataConfig(), 0, parts)
    assert kept.train is s.train
    carved = split_indices(
        prepared.y, task, DataConfig(), 0, within=s.train, validation_split=0.0, test_split=0.0
    )
    np.testing.assert_array_equal(kept.train, carved.train)
    assert isinstance(kept, Splits)


@pytest.mark.parametrize(
    "raw, dtype",
    [
        (np.array([0, 1, 1, 0], np.int64), np.int8),
        (np.array([0, 300, -5], np.int64), np.int16),
        (np.array([0, 2**40], np.int64), np.int64),
        (np.array([1.0, 2.0, 0.5], np.float64), np.float32),
        (np.array([0.1, 0.2], np.float64), np.float64),  # not exact in float32
    ],
)
def test_labels_are_read_in_the_smallest_exact_dtype(raw, dtype):
    compact = compact_labels(raw, {})
    assert compact.dtype == dtype
    np.testing.assert_array_equal(compact.astype(raw.dtype), raw)


def test_text_labels_share_one_string_per_class():
    shared: dict = {}
    first = compact_labels(np.array(["cat", "dog", "cat"], dtype=object), shared)
    second = compact_labels(np.array(["".join(["d", "og"]), "cat"], dtype=object), shared)
    assert first.tolist() == ["cat", "dog", "cat"] and second.tolist() == ["dog", "cat"]
    assert first[0] is first[2] is second[1] and first[1] is second[0]


def test_split_rows_and_split_of_work_chunk_by_chunk(prepared, monkeypatch):
    monkeypatch.setattr(table_stream, "ROW_CHUNK", 100)
    code = np.random.default_rng(0).integers(0, 3, 10_000).astype(np.int8)
    rows = split_rows(code, 1)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, np.flatnonzero(code == 1))
    stream, s = prepared.x, prepared.splits
    assert stream.split_of(s.train) == TRAIN
    swapped = s.train.copy()
    swapped[[99, 100]] = swapped[[100, 99]]  # out of order across two chunks
    assert stream.split_of(swapped) is None


def test_int8_labels_are_checked_as_int64_ones_are():
    from kerastrain.data.validate import check_labels
    from kerastrain.errors import DataError

    small = np.array([0, 2, 1, 2, 0], np.int8)
    got, task = check_labels(small, DataConfig())
    want, want_task = check_labels(small.astype(np.int64), DataConfig())
    assert got.dtype == want.dtype == np.int32 and task == want_task
    np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match=r"rows 1 \(1 row\) are negative \(first: -1\)"):
        check_labels(np.array([0, -1, 1], np.int8), DataConfig())
    with pytest.raises(DataError, match="outside the class range 0..1"):
        check_labels(np.array([0, 1, 5], np.int8), DataConfig(num_classes=2))


def test_unshuffled_batches_of_a_multi_file_stream_come_in_row_order(prepared, monkeypatch):
    # Several parse batches a file: interleaved files would mix their rows,
    # and outputs paired with `y[split]` by position would be another row's.
    monkeypatch.setattr(table_stream, "PARSE_ROWS", 64)
    stream, s = prepared.x, prepared.splits
    for rows in (s.val, s.test, s.train[::5]):
        read = np.concatenate(
            [i for i, _ in stream.batches(rows, 100, shuffle=False).as_numpy_iterator()]
        )
        np.testing.assert_array_equal(read, rows)


def test_a_streamed_split_is_predicted_in_its_rows_order(prepared, monkeypatch):
    from kerastrain._keras import keras
    from kerastrain.evaluation import _predict_table_stream

    monkeypatch.setattr(table_stream, "PARSE_ROWS", 64)
    # A model that answers its x1 column: the outputs are the rows' values.
    x1 = keras.Input(shape=(), name="x1")
    colour = keras.Input(shape=(), name="colour", dtype=tf.string)
    model = keras.Model([x1, colour], keras.layers.Reshape((1,))(x1))
    rows = prepared.splits.test
    outputs = _predict_table_stream(model, prepared, rows)
    np.testing.assert_allclose(outputs[:, 0], prepared.x.read(rows)["x1"], rtol=1e-6)


PARQUET_FILES, PARQUET_ROWS = 8, 400


@pytest.fixture(scope="module")
def parquet_stream(tmp_path_factory):
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("parquet")
    for i in range(PARQUET_FILES):
        x1 = rng.normal(size=PARQUET_ROWS)
        colour = rng.choice(["red", "green", "blue"], size=PARQUET_ROWS)
        label = (x1 + (colour == "red") > 0.3).astype(np.int64)
        frame = pd.DataFrame({"x1": x1, "colour": colour, "label": label})
        frame.to_parquet(folder / f"part-{i}.parquet", index=False)
    pattern = str(folder / "part-*.parquet")
    return prepare_data(pattern, DataConfig(target="label", in_memory_mb=TINY_MB), seed=0)


def test_a_parquet_stream_has_at_most_parquet_open_files_open(parquet_stream, monkeypatch):
    # Each open Parquet file holds a decoded row group: the training stream's
    # memory is bounded by the files open at once. A parallel interleave
    # opened as many files again ahead of need (8 of 8 here, 4 at most
    # asked for), so the peak grew with the number of files up to 8.
    monkeypatch.setattr(table_stream, "PARSE_ROWS", 16)  # several batches a file
    read = table_stream.iter_file_batches
    open_now, most, seen = [0], [0], set()

    def counted(tables, path, *args, **kwargs):
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])
        seen.add(path)
        try:
            yield from read(tables, path, *args, **kwargs)
        finally:
            open_now[0] -= 1

    monkeypatch.setattr(table_stream, "iter_file_batches", counted)
    stream, train = parquet_stream.x, parquet_stream.splits.train
    rows = np.concatenate(
        [i for i, _ in stream.batches(train, 64, shuffle=True, seed=0).as_numpy_iterator()]
    )
    np.testing.assert_array_equal(np.sort(rows), train)  # each training row once
    assert len(seen) == PARQUET_FILES
    assert most[0] <= 2, most[0]


def test_parquet_blocks_are_as_small_as_the_other_formats(parquet_stream, monkeypatch):
    # The training shuffle buffer holds SHUFFLE_ROWS // PARSE_ROWS blocks:
    # Parquet's 8x larger read batches made it hold 8x the rows.
    monkeypatch.setattr(table_stream, "PARSE_ROWS", 32)
    sizes = [len(i) for i, _ in parquet_stream.x._parsed(True, 0).as_numpy_iterator()]
    assert max(sizes) <= 32 and sum(sizes) == PARQUET_FILES * PARQUET_ROWS


@pytest.mark.slow
def test_verification_of_a_streamed_split_reads_a_sample_of_it(tmp_path, monkeypatch):
    import kerastrain
    from kerastrain import pipeline

    # The whole test split of a large stream would be read into memory as
    # Python objects; a seeded sample of it is read from the files instead.
    monkeypatch.setattr(pipeline, "STREAM_VERIFY_ROWS", 50, raising=False)
    reads = []
    read = TableStream.read
    monkeypatch.setattr(
        TableStream, "read", lambda self, rows: reads.append(len(rows)) or read(self, rows)
    )
    result = kerastrain.fit_pipeline(
        _pattern(tmp_path),
        "mlp",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"target": "label", "in_memory_mb": TINY_MB, "audit": False},
        train={"epochs": 1, "verbose": 0, "early_stopping": None},
        model_options={"width": 8},
        export={"formats": ["savedmodel"]},
        report={"explain": "none"},
    )
    test_rows = result.metrics["test"]["examples"]
    assert test_rows > 50
    assert reads == [50]  # the only rows read in Python: the sample
    verified = result.metrics["savedmodel"]
    assert verified["verified_rows"] == 50 and verified["split_rows"] == test_rows
    # The sample's outputs are paired with the model's on the same rows.
    assert verified["max_abs_diff"] < 1e-4
