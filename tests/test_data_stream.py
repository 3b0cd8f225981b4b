"""Tables from CSV, Parquet and TFRecord files, streamed when large."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain._keras import tf
from kerastrain.config import DataConfig
from kerastrain.data import table_stream
from kerastrain.data.prepare import prepare_data
from kerastrain.data.table_stream import TableStream, shard_policy
from kerastrain.errors import DataError

#: Forces streaming: every generated table is larger than this.
TINY_MB = 0.001
ROWS = 3000


def _frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical columns (text and small integers), holes in
    both kinds, a binary label that depends on each, and an id."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(2, 3, size=rows)
    colour = rng.choice(["red", "green", "blue", "grey"], size=rows)
    level = rng.integers(0, 4, size=rows)
    logit = 2.5 * x1 - 0.8 * x2 + 1.6 + np.where(colour == "red", 2.0, 0.0) - 0.7 * level
    label = (logit + rng.logistic(size=rows) * 0.5 > 0).astype(np.int64)
    frame = pd.DataFrame(
        {"id": np.arange(rows), "x1": x1, "x2": x2, "colour": colour, "level": level}
    )
    frame["label"] = label
    frame.loc[rng.random(rows) < 0.05, "x1"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "colour"] = None
    return frame


def _parts(frame: pd.DataFrame, files: int = 3) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(frame), files + 1).astype(int)
    return [frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:])]


def _write_tfrecord(frame: pd.DataFrame, path) -> None:
    def feature(value):
        if isinstance(value, str) or value is None:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[(value or "").encode()]))
        if isinstance(value, (int, np.integer)):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in frame.astype(object).itertuples(index=False):
            features = {
                name: feature(None if name == "colour" and not isinstance(v, str) else v)
                for name, v in zip(frame.columns, row)
            }
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def _write(frame: pd.DataFrame, folder, fmt: str, files: int = 3) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"csv": "csv", "parquet": "parquet", "tfrecord": "tfrecord"}[fmt]
    for i, part in enumerate(_parts(frame, files)):
        path = folder / f"part-{i}.{suffix}"
        if fmt == "csv":
            part.to_csv(path, index=False)
        elif fmt == "parquet":
            part.to_parquet(path, index=False)
        else:
            _write_tfrecord(part, path)
    return str(folder / f"part-*.{suffix}")


def _options(**kwargs) -> DataConfig:
    return DataConfig(target="label", **kwargs)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture(scope="module", params=["csv", "parquet", "tfrecord"])
def files(request, frame, tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, _write(frame, folder, request.param)


# --------------------------------------------------------------------------- streaming, no training


def test_streamed_splits_do_not_overlap_cover_every_row_and_repeat(files, caplog):
    _, pattern = files
    with caplog.at_level(logging.INFO):
        first = prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0)
    again = prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=7)
    assert isinstance(first.x, TableStream)
    s = first.splits
    assert len(np.intersect1d(s.train, s.val)) == 0
    assert len(np.intersect1d(s.train, s.test)) == 0
    assert len(np.intersect1d(s.val, s.test)) == 0
    assert len(s.train) + len(s.val) + len(s.test) == ROWS
    assert 0.1 * ROWS < len(s.test) < 0.2 * ROWS
    for name in ("train", "val", "test"):  # another seed, another run: the same rows
        np.testing.assert_array_equal(getattr(s, name), getattr(again.splits, name))
    assert "stratification is not possible while streaming" in caplog.text


def test_streamed_statistics_equal_the_in_memory_encoding(files, frame):
    # The same split (split_key) in memory and streamed: the same encoding.
    _, pattern = files
    options = {"split_key": "id", "columns": {"id": "drop"}}
    streamed = prepare_data(pattern, _options(in_memory_mb=TINY_MB, **options), seed=0)
    memory = prepare_data(pattern, _options(**options), seed=0)
    assert isinstance(streamed.x, TableStream) and isinstance(memory.x, dict)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(streamed.splits, name), getattr(memory.splits, name))
    np.testing.assert_array_equal(streamed.y, memory.y)
    by_name = {c.name: c for c in memory.encoding.columns}
    assert [c.name for c in streamed.encoding.columns] == list(by_name)
    for c in streamed.encoding.columns:
        m = by_name[c.name]
        assert c.kind == m.kind and c.text == m.text
        assert c.vocabulary == m.vocabulary and c.fill == pytest.approx(m.fill)
        assert c.mean == pytest.approx(m.mean, rel=1e-6, abs=1e-9)
        assert c.variance == pytest.approx(m.variance, rel=1e-6)
    assert {c.name: c.kind for c in streamed.encoding.columns} == {
        "x1": "numeric",
        "x2": "numeric",
        "colour": "categorical",
        "level": "categorical",
    }
    train = frame.iloc[streamed.splits.train]
    assert by_name["x1"].fill == pytest.approx(train["x1"].median())


def test_the_tf_data_stream_yields_exactly_a_splits_rows_with_their_values(files):
    _, pattern = files
    prepared = prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0)
    stream, test = prepared.x, prepared.splits.test
    seen, columns = [], []
    ds = stream.batches(test, 64, shuffle=True, seed=1)
    assert int(ds.cardinality()) == -(-len(test) // 64)
    for idx, x in ds.as_numpy_iterator():
        seen.append(idx)
        columns.append(x)
    seen = np.concatenate(seen)
    assert sorted(seen.tolist()) == test.tolist()  # each test row once, no other row
    assert not np.array_equal(seen, test)  # shuffled
    read = stream.read(seen)
    got = {k: np.concatenate([c[k] for c in columns]) for k in read}
    np.testing.assert_allclose(got["x1"], read["x1"], equal_nan=True)
    np.testing.assert_array_equal(got["colour"].astype(str), read["colour"].astype(str))


def test_statistics_pass_logs_rows_and_rate(files, monkeypatch, caplog):
    monkeypatch.setattr(table_stream, "PROGRESS_SECONDS", 0.0)
    _, pattern = files
    with caplog.at_level(logging.INFO, logger="kerastrain.data.table_stream"):
        prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0)
    assert "Statistics pass:" in caplog.text and "rows/s" in caplog.text
    assert "s left" in caplog.text
    assert "Training rows per label: {0: " in caplog.text


def test_workers_share_by_file_when_files_suffice_else_by_record():
    assert shard_policy(4, 2, "csv") == "FILE"
    assert shard_policy(4, 4, "tfrecord") == "FILE"
    assert shard_policy(1, 2, "csv") == "DATA"
    assert shard_policy(8, 2, "parquet") == "DATA"  # read through pyarrow, not a tf.data reader


# --------------------------------------------------------------------------- bad input


def test_a_glob_matching_nothing_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"part-\*\.parquet.*matches no file"):
        prepare_data(str(tmp_path / "part-*.parquet"), _options(), seed=0)


def test_a_parquet_part_with_another_column_type_names_file_and_column(tmp_path, frame):
    _write(frame, tmp_path, "parquet")
    odd = frame.iloc[:10].assign(x2=[f"v{i}" for i in range(10)])
    odd.to_parquet(tmp_path / "part-9.parquet", index=False)
    with pytest.raises(DataError, match=r"Column 'x2' of the Parquet file .*part-9\.parquet"):
        prepare_data(str(tmp_path / "*.parquet"), _options(in_memory_mb=TINY_MB), seed=0)


def test_a_tfrecord_feature_missing_from_some_records_names_file_and_feature(tmp_path, frame):
    _write(frame, tmp_path, "tfrecord")
    with tf.io.TFRecordWriter(str(tmp_path / "part-9.tfrecord")) as writer:
        for i in range(3):
            features = {
                "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "x1": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5])),
                "colour": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"red"])),
                "level": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            }  # no x2
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
            )
    with pytest.raises(DataError, match=r"Feature 'x2' is missing .*part-9\.tfrecord"):
        prepare_data(str(tmp_path / "*.tfrecord"), _options(in_memory_mb=TINY_MB), seed=0)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_split_key_that_is_not_a_column_names_file_and_column(tmp_path, frame, fmt):
    pattern = _write(frame, tmp_path, fmt)
    with pytest.raises(DataError, match=r"split_key=.user. is not a column of the file .*part-0"):
        prepare_data(pattern, _options(in_memory_mb=TINY_MB, split_key="user"), seed=0)


def test_one_large_csv_file_is_streamed_and_a_small_one_read_as_before(tmp_path, frame):
    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False)
    streamed = prepare_data(str(path), _options(in_memory_mb=TINY_MB), seed=0)
    assert isinstance(streamed.x, TableStream) and streamed.num_rows == ROWS
    memory = prepare_data(str(path), _options(), seed=0)
    assert isinstance(memory.x, dict) and memory.source == f"CSV {path}"


def test_a_time_split_of_a_streamed_table_is_refused_before_any_pass(tmp_path, frame):
    pattern = _write(frame.iloc[:100], tmp_path, "parquet")
    with pytest.raises(DataError, match=r"split='time'.*is streamed"):
        prepare_data(pattern, _options(in_memory_mb=TINY_MB, split="time"), seed=0)


def test_a_word_in_a_numeric_csv_column_names_file_and_column(tmp_path, frame):
    pattern = _write(frame, tmp_path, "csv")
    bad = frame.iloc[:5].astype(object)
    bad.loc[bad.index[3], "x2"] = "oops"
    bad.to_csv(tmp_path / "part-9.csv", index=False)
    with pytest.raises(DataError, match=r"part-9\.csv.*column 'x2'"):
        prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0)


# --------------------------------------------------------------------------- training


def _fit(pattern: str, tmp_path, **data_options):
    return kerastrain.fit_pipeline(
        pattern,
        "mlp",
        seed=0,
        output_dir=str(tmp_path),
        data_options={
            "target": "label",
            "split_key": "id",
            "columns": {"id": "drop"},
            **data_options,
        },
        train={"epochs": 4, "verbose": 0, "early_stopping": None},
        model_options={"width": 32},
        export={"formats": ["savedmodel"]},
        report={"explain": "none"},
    )


def _serve_raw(result) -> np.ndarray:
    serve = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["serving_default"]
    raw = {
        "x1": tf.constant([np.nan, 1.5, -2.0], tf.float32),
        "x2": tf.constant([2.0, 0.0, 9.0], tf.float32),
        "colour": tf.constant(["", "red", "purple"]),  # missing, seen, never seen
        "level": tf.constant([0.0, 3.0, 1.0], tf.float32),
    }
    return serve(**raw)["output"].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet", "tfrecord"])
def test_a_streamed_table_trains_exports_raw_columns_and_scores_like_in_memory(
    tmp_path, frame, fmt
):
    pattern = _write(frame, tmp_path / "data", fmt)
    streamed = _fit(pattern, tmp_path / "streamed", in_memory_mb=TINY_MB)
    served = _serve_raw(streamed)
    assert served.shape[0] == 3 and np.isfinite(served).all()
    assert streamed.metrics["savedmodel"]["max_abs_diff"] < 1e-4
    accuracy = streamed.metrics["test"]["accuracy"]
    assert accuracy > 0.85
    if fmt == "csv":  # the same files, split and encoding in memory
        memory = _fit(pattern, tmp_path / "memory")
        assert memory.metrics["test"]["examples"] == streamed.metrics["test"]["examples"]
        # 1 point of ~450 test rows is 4-5 rows; the two runs differ only by
        # their shuffle order.
        assert abs(memory.metrics["test"]["accuracy"] - accuracy) <= 0.01


def test_each_worker_reads_its_own_share_of_the_training_rows(tmp_path):
    # The rewrite a multi-worker strategy applies to each worker's dataset
    # (each worker builds its own, from the same seed).
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    for fmt in ("csv", "tfrecord", "parquet"):
        pattern = _write(_frame(rows=800), tmp_path / fmt, fmt, files=4)
        stream = prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0).x
        train = stream.train
        shares = []
        for worker in range(2):
            ds = stream.batches(train, 32, shuffle=True, seed=0)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = getattr(
                tf.data.experimental.AutoShardPolicy, stream.shard_policy()
            )
            sharded = _AutoShardDataset(ds.with_options(options), 2, worker)
            shares.append(np.concatenate([i for i, _ in sharded.as_numpy_iterator()]))
        assert stream.shard_policy() == ("DATA" if fmt == "parquet" else "FILE")
        assert len(np.intersect1d(*shares)) == 0, fmt  # no row read twice
        np.testing.assert_array_equal(np.union1d(*shares), train)  # none left out
        assert min(len(s) for s in shares) > 0.3 * len(train)


def test_a_folder_of_table_parts_is_a_table_and_an_image_folder_stays_one(tmp_path, frame):
    from kerastrain.data.table_files import find_table_files

    _write(frame.iloc[:50], tmp_path / "table", "parquet", files=2)
    found = find_table_files(tmp_path / "table")
    assert found.format == "parquet" and len(found.files) == 2
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"")
    frame.iloc[:5].to_csv(tmp_path / "images" / "labels.csv", index=False)
    assert find_table_files(tmp_path / "images") is None


def test_the_data_audit_reads_a_sample_of_a_streamed_table(files):
    from kerastrain.data.audit import audit_data

    _, pattern = files
    prepared = prepare_data(pattern, _options(in_memory_mb=TINY_MB), seed=0)
    quality = audit_data(
        prepared.x,
        prepared.y,
        prepared.task,
        prepared.splits,
        seed=0,
        table=prepared.table,
        feature_names=prepared.feature_names,
        sample_rows=500,
    )
    assert quality.rows == ROWS and quality.rows_hashed == 500
    assert quality.columns_checked == 5  # id, x1, x2, colour, level
    assert quality.missing["x1"] == pytest.approx(0.05, abs=0.03)
