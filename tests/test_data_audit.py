"""The data-quality audit (`kerastrain.data.audit`), `deduplicate`, and `audit="strict"`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain.config import DataConfig, load_config
from kerastrain.data.audit import audit_data, drop_duplicates, row_hashes
from kerastrain.data.prepare import prepare_data
from kerastrain.data.split import Splits
from kerastrain.data.tabular import read_table
from kerastrain.errors import ConfigError, DataError
from kerastrain.task import Task

N, TRAIN, VAL = 2000, 1400, 1700  # rows; train is [0, 1400), val [1400, 1700), test the rest


def _planted() -> tuple[pd.DataFrame, Splits]:
    """A binary table with every problem the audit looks for, planted:
    20 training rows copied into test, 5 rows of training whose features
    repeat other training rows with the other label, a constant column, a
    column that is the label plus noise, and a column shifted in test."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=N),
            "b": rng.normal(size=N),
            "colour": rng.choice(["red", "green", "blue"], N),
            "const": np.full(N, 3.0),
            "leak": y + rng.normal(0, 0.05, N),
            "shift": rng.normal(size=N),
            "label": y,
        }
    )
    frame.loc[VAL:, "shift"] += 3.0
    frame.iloc[VAL : VAL + 20] = frame.iloc[0:20].to_numpy()  # copies of training rows in test
    features = [c for c in frame.columns if c != "label"]
    frame.loc[100:104, features] = frame.loc[200:204, features].to_numpy()
    frame.loc[100:104, "label"] = 1 - frame.loc[200:204, "label"].to_numpy()
    splits = Splits(np.arange(TRAIN), np.arange(TRAIN, VAL), np.arange(VAL, N))
    return frame, splits


def _audit(frame: pd.DataFrame, splits: Splits, **kwargs):
    x, y, table = read_table(frame, DataConfig(target="label"), source="planted")
    return audit_data(x, y.astype(np.int64), Task("binary", 2), splits, table=table, **kwargs)


def test_audit_finds_every_planted_problem():
    frame, splits = _planted()
    quality = _audit(frame, splits)
    copies = quality.of("cross_split_duplicates")
    assert len(copies) == 1 and copies[0].count == 20 and copies[0].severity == "leakage"
    assert copies[0].rows == tuple(range(VAL, VAL + 10))  # up to 10 row numbers, named
    conflicts = quality.of("conflicting_labels")
    assert len(conflicts) == 1 and set(conflicts[0].rows) == {*range(100, 105), *range(200, 205)}
    assert [f.columns for f in quality.of("constant")] == [("const",)]
    assert [f.columns for f in quality.of("target_leakage")] == [("leak",)]
    assert quality.of("target_leakage")[0].value >= 0.99
    drift = quality.of("drift")
    assert [f.columns for f in drift] == [("shift",)] and drift[0].value > 0.25
    assert all(VAL <= r < N for r in drift[0].rows)
    assert quality.of("duplicates")[0].count == 20
    assert all(len(f.rows) <= 10 for f in quality.findings)
    assert quality.rows_sampled == N and quality.rows_hashed == N
    section = quality.report_section()
    assert section["title"] == "Data quality" and len(section["rows"]) == len(quality.findings)


@pytest.mark.parametrize("name", ["digits", "wine"])
def test_audit_raises_nothing_on_clean_data(name):
    prepared = prepare_data(name, DataConfig(), 0)
    quality = audit_data(
        prepared.x,
        prepared.y,
        prepared.task,
        prepared.splits,
        mode="strict",  # raises on leakage: it must not
        table=prepared.table,
        feature_names=prepared.feature_names,
    )
    assert [f for f in quality.findings if f.severity != "info"] == []


def test_audit_samples_large_data_and_says_so():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 5)).astype(np.float32)
    y = rng.integers(0, 2, 3000)
    splits = Splits(np.arange(2000), np.arange(2000, 2500), np.arange(2500, 3000))
    quality = audit_data(x, y, Task("binary", 2), splits, sample_rows=500)
    assert quality.rows_sampled == 500 and quality.rows_hashed == 3000
    assert "sample of 500 of 3,000 rows" in quality.describe()


def test_row_hashes_equal_exactly_for_equal_rows():
    x = np.array([[0.0, np.nan], [-0.0, np.nan], [0.0, 1.0], [1e-30, np.nan]], np.float32)
    h = row_hashes(x)
    assert h[0] == h[1] and len({h[0], h[2], h[3]}) == 3
    table = {"n": np.array([1.0, 1.0, 2.0]), "c": np.array(["a", "a", "a"], dtype=object)}
    t = row_hashes(table)
    assert t[0] == t[1] != t[2]


def test_deduplicate_drops_repeats_before_the_split(caplog):
    frame, _ = _planted()
    with caplog.at_level(logging.WARNING, logger="kerastrain.data.audit"):
        prepared = prepare_data(frame, DataConfig(target="label", deduplicate=True), 0)
    assert prepared.num_rows == N - 20  # the 20 exact copies; conflicting rows differ in label
    assert list(prepared.duplicates) == list(range(VAL, VAL + 20))
    assert "dropped 20 duplicate rows" in caplog.text
    assert "dropped duplicate rows (deduplicate=True)" in prepared.summary()
    quality = audit_data(
        prepared.x, prepared.y, prepared.task, prepared.splits, table=prepared.table
    )
    assert not quality.of("duplicates")
    # What still crosses splits is only the conflicting-label pairs (they differ in label).
    crossing = {r for f in quality.of("cross_split_duplicates") for r in f.rows}
    assert crossing <= {*range(100, 105), *range(200, 205)}


def test_deduplicate_renumbers_fixed_parts():
    x = np.array([[0.0], [1.0], [0.0], [2.0], [3.0]], np.float32)
    y = np.array([0, 1, 0, 1, 0])
    parts = {"train": np.array([0, 1, 2]), "test": np.array([3, 4])}
    kept_x, kept_y, kept_parts, dropped = drop_duplicates(x, y, parts)
    assert list(dropped) == [2] and kept_x[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert kept_parts["train"].tolist() == [0, 1] and kept_parts["test"].tolist() == [2, 3]


class _Untouched:
    """A model factory that records whether training got as far as building it."""

    called = False

    def __call__(self, *args, **kwargs):
        type(self).called = True
        raise AssertionError("the model was built: the audit did not stop the run before training")


@pytest.mark.parametrize(
    "plant, match",
    [
        ("copies", "test rows have the same features as a training row"),
        ("leak", "Column 'leak' alone predicts the label"),
    ],
)
def test_strict_audit_raises_before_training(tmp_path, plant, match):
    rng = np.random.default_rng(2)
    n = 600
    frame = pd.DataFrame({"a": rng.normal(size=n), "label": rng.integers(0, 2, n)})
    if plant == "copies":
        frame = pd.concat([frame, frame], ignore_index=True)  # every row twice
    else:
        frame["leak"] = frame["label"] + rng.normal(0, 0.01, n)
    factory = _Untouched()
    with pytest.raises(DataError, match=match):
        kerastrain.fit_pipeline(
            frame,
            factory,
            data_options={"target": "label", "audit": "strict"},
            train={"epochs": 1, "verbose": 0},
            output_dir=str(tmp_path / "run"),
            seed=0,
        )
    assert not _Untouched.called


def test_audit_options_are_checked():
    assert load_config(data_options={"audit": "strict"}).data_options.audit == "strict"
    assert load_config().data_options.audit is True
    with pytest.raises(ConfigError, match="data_options.audit.*Did you mean 'strict'"):
        load_config(data_options={"audit": "strictt"})
    with pytest.raises(ConfigError, match="data_options.audit_rows"):
        load_config(data_options={"audit_rows": 5})
    with pytest.raises(ConfigError, match="data_options.resample"):
        load_config(data_options={"resample": "over"})
