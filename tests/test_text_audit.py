"""The data-quality audit of text columns: repeated texts within training and
across splits (row numbers named), length statistics, no misfire of the
column checks on free text, and `audit="strict"` on shared texts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain.config import DataConfig
from kerastrain.data.audit import audit_data, token_counts
from kerastrain.data.split import Splits
from kerastrain.data.table_stream import TableStream
from kerastrain.data.tabular import read_table
from kerastrain.errors import DataError
from kerastrain.task import Task

WORDS = [f"w{i}" for i in range(400)]
N, TRAIN, VAL = 240, 160, 200  # train [0, 160), validation [160, 200), test [200, 240)


def _texts(n: int, seed: int = 0) -> list[str]:
    """Distinct texts of 4 to 12 words drawn from 400."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(4, 13)))) for _ in range(n)]


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"review": _texts(N, seed), "stars": rng.normal(size=N), "label": rng.integers(0, 2, N)}
    )


def _audit(frame: pd.DataFrame, **kwargs):
    options = DataConfig(target="label", text_columns=["review"])
    x, y, table = read_table(frame, options, source="planted")
    splits = Splits(np.arange(TRAIN), np.arange(TRAIN, VAL), np.arange(VAL, N))
    return audit_data(x, y.astype(np.int64), Task("binary", 2), splits, table=table, **kwargs)


def test_repeated_and_shared_texts_are_found_with_their_rows():
    frame = _frame()
    # Training rows 40..42 repeat rows 3..5 up to case and whitespace.
    frame.loc[40:42, "review"] = ["  " + t.upper().replace(" ", "   ") for t in frame.review[3:6]]
    # Twelve test rows (and two validation rows) carry training texts, re-cased.
    frame.loc[210:221, "review"] = [t.title() + " " for t in frame.review[50:62]]
    frame.loc[170:171, "review"] = frame.review[7:9].to_numpy()
    quality = _audit(frame)
    (repeated,) = quality.of("duplicate_texts")
    assert repeated.rows == (40, 41, 42) and repeated.columns == ("review",)
    assert repeated.severity == "warning" and "rows 40, 41, 42" in repeated.message
    shared = {f.message.split(": ")[1].split()[1]: f for f in quality.of("cross_split_texts")}
    assert set(shared) == {"test", "validation"}
    test = shared["test"]
    assert test.severity == "leakage" and test.count == 12
    assert test.rows == tuple(range(210, 220))  # up to 10 row numbers
    assert shared["validation"].rows == (170, 171)
    # Whole rows differ (the stars column), so only the text check sees them.
    assert not quality.of("cross_split_duplicates")


def test_a_clean_text_column_raises_no_leakage_drift_or_constant_finding():
    quality = _audit(_frame())
    text_findings = [f for f in quality.findings if "review" in f.columns]
    assert text_findings == []
    assert not [f for f in quality.findings if f.severity == "leakage"]
    assert quality.columns_checked == 2


def test_length_statistics_of_each_text_column_are_in_the_result():
    frame = _frame()
    frame.loc[[5, 90, 230], "review"] = ["", "   ", "!!! ..."]  # the last strips to no word
    quality = _audit(frame)
    stats = quality.text["review"]
    counts = token_counts(frame["review"].to_numpy(object))
    assert counts[[5, 90, 230]].tolist() == [0, 0, 0]
    assert stats == {
        "rows": N,
        "mean_tokens": pytest.approx(counts.mean()),
        "max_tokens": int(counts.max()),
        "empty_rows": 3,
        "unit": "word",
    }
    assert 4 <= stats["mean_tokens"] <= 12 and stats["max_tokens"] <= 12
    (empty,) = quality.of("empty_texts")
    assert empty.rows == (5, 90) and empty.severity == "info"  # blank, not "!!! ..."
    assert quality.to_dict()["text"]["review"]["empty_rows"] == 3
    assert "Text column 'review': " in quality.report_section()["text"]
    characters = _audit(frame, tokenizer="character").text["review"]
    assert characters["unit"] == "character"
    assert characters["max_tokens"] == frame["review"].str.len().max()


def test_a_text_length_shift_is_drift_but_new_words_are_not():
    frame = _frame()
    frame.loc[VAL:, "review"] = [t + " " + t + " " + t for t in _texts(N - VAL, seed=9)]
    quality = _audit(frame)
    (drift,) = quality.of("length_drift")
    assert drift.columns == ("review",) and drift.severity == "warning"
    assert not quality.of("drift")


class _Untouched:
    """A model factory (that reads text) recording whether the run built it."""

    called = False
    reads_text = True

    def __call__(self, *args, **kwargs):
        type(self).called = True
        raise AssertionError("the model was built: the audit did not stop the run before training")


def test_strict_audit_refuses_texts_shared_across_splits_before_training(tmp_path):
    frame = _frame()
    twin = frame.assign(review=frame.review.str.upper(), stars=frame.stars + 1.0)
    factory = _Untouched()
    with pytest.raises(DataError, match=r"Text column 'review': \d+ test rows have the text of a"):
        kerastrain.fit_pipeline(
            pd.concat([frame, twin], ignore_index=True),
            factory,
            data_options={"target": "label", "text_columns": ["review"], "audit": "strict"},
            train={"epochs": 1, "verbose": 0},
            output_dir=str(tmp_path / "run"),
            seed=0,
        )
    assert not _Untouched.called


# ------------------------------------------------------------------------- bad text


@pytest.mark.parametrize("empty", [None, np.nan, "", "csv"])
def test_an_empty_text_column_is_refused_by_name(tmp_path, empty):
    from kerastrain.data.prepare import prepare_data

    frame = pd.DataFrame(
        {
            "body": [None if empty == "csv" else empty] * 30,
            "x": np.arange(30.0),
            "label": [0, 1] * 15,
        }
    )
    data: object = frame
    source = "DataFrame"
    if empty == "csv":  # empty cells of a CSV file
        frame.to_csv(tmp_path / "empty.csv", index=False)
        data, source = str(tmp_path / "empty.csv"), "empty.csv"
    with pytest.raises(DataError, match=rf"Column 'body' of .*{source}.* has no value in any of"):
        prepare_data(data, DataConfig(target="label", text_columns=["body"]), seed=0)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tfrecord"])
def test_a_table_files_text_column_reads_as_text_in_memory_and_streamed(tmp_path, fmt):
    # Regression: the file reader (Parquet, TFRecord, several CSV files) knew
    # only numeric and categorical columns, so a text column (detected or
    # named) was parsed as numbers: pyarrow's "Failed to parse string ... as a
    # scalar of type double".
    from test_data_stream import _write

    from kerastrain.data.prepare import prepare_data

    frame = _frame()
    files = _write(frame, tmp_path / fmt, fmt)
    for options in ({}, {"text_columns": ["review"]}):
        prepared = prepare_data(files, DataConfig(target="label", **options), seed=0)
        assert prepared.table.columns == {"review": "text", "stars": "numeric"}
        assert list(prepared.x["review"]) == list(frame.review)
    # Streamed, it is a text column too (its vocabulary from the statistics pass).
    streamed = prepare_data(files, DataConfig(target="label", in_memory_mb=0), seed=0)
    assert isinstance(streamed.x, TableStream)
    assert streamed.table.columns == {"review": "text", "stars": "numeric"}
    (column,) = [c for c in streamed.encoding.columns if c.kind == "text"]
    assert column.text and column.vocabulary
