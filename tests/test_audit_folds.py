"""The data-quality audit where `fit_pipeline` does not prepare the data:
cross-validation audits the whole data once before its folds, a tuning
worker audits its own copy; `audit="strict"` stops both before training."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import kerastrain
from kerastrain.config import DataConfig, PipelineConfig, save_config
from kerastrain.data.prepare import prepare_data
from kerastrain.errors import DataError

ROWS = 120


def _arrays(copies: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A clean binary table, its last ``copies`` rows copies of its first."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=ROWS) > 0).astype(np.int64)
    if copies:
        x[-copies:], y[-copies:] = x[:copies], y[:copies]
    return x, y


def _cv(data, tmp_path, audit, folds=2):
    return kerastrain.cross_validate(
        data,
        "mlp",
        folds=folds,
        seed=0,
        output_dir=str(tmp_path / "cv"),
        data_options={"audit": audit},
        model_options={"width": 8, "depth": 1},
        train={"epochs": 1, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report={"explain": "none"},
    )


def test_rows_repeated_in_another_fold_are_found_and_copies_in_one_fold_are_not():
    from kerastrain.data.audit_folds import cross_fold_duplicates

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    x[5] = x[0]  # rows 0 and 5: folds 0 and 1
    x[2] = x[1]  # rows 1 and 2: both in fold 0
    folds = [(np.array([3, 4, 5]), np.array([0, 1, 2])), (np.array([0, 1, 2]), np.array([3, 4, 5]))]
    found = cross_fold_duplicates(x, folds, 6)
    assert found.check == "cross_split_duplicates" and found.severity == "leakage"
    assert found.count == 2 and found.rows == (0, 5)
    # Time-series folds: rows no fold holds out are one more group.
    assert cross_fold_duplicates(x, [(np.array([0, 1, 2]), np.array([4, 5]))], 6).rows == (0, 5)
    assert cross_fold_duplicates(x, [(np.array([3, 4]), np.array([0, 1, 2, 5]))], 6) is None


def test_strict_audit_stops_cross_validation_before_any_fold_trains(tmp_path):
    with pytest.raises(DataError, match="another cross-validation fold"):
        _cv(_arrays(copies=30), tmp_path, "strict")
    assert not (tmp_path / "cv" / "fold_1").exists()


def test_the_fold_audit_checks_columns_on_every_row_once(caplog):
    from kerastrain.data.audit_folds import audit_folds

    x, y = _arrays()
    x[:, 3] = 1.0  # a constant column
    prepared = prepare_data((x, y), DataConfig(), seed=0)
    caplog.set_level(logging.INFO, logger="kerastrain")
    folds = [(np.arange(60, ROWS), np.arange(60)), (np.arange(60), np.arange(60, ROWS))]
    quality = audit_folds(prepared, folds, DataConfig(), seed=0)
    assert quality.rows == ROWS and quality.rows_sampled == ROWS
    assert [f.check for f in quality.findings] == ["constant"]
    assert audit_folds(prepared, folds, DataConfig(audit=False), seed=0) is None


@pytest.mark.slow
def test_cross_validation_audits_once_and_reports_the_findings(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kerastrain")
    cv = _cv(_arrays(copies=30), tmp_path, True)
    shared = cv.data_quality.of("cross_split_duplicates")
    assert len(shared) == 1 and shared[0].count >= 2
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["data_quality"]["findings"][0]["check"] == "cross_split_duplicates"
    # One audit for the whole cross-validation, none per fold.
    audits = [r for r in caplog.records if r.getMessage().startswith("Data audit:")]
    assert len(audits) == 1, [r.getMessage() for r in audits]
    assert all(r.data_quality is None for r in cv.results)


def test_strict_audit_stops_a_tuning_worker_before_it_asks_for_trials(tmp_path):
    from kerastrain.tune.distributed import WORKER_CONFIG
    from kerastrain.tune.worker import main

    x, y = _arrays()
    frame_path = tmp_path / "table.csv"
    import pandas as pd

    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["leak"] = y * 10.0  # the label, renamed
    frame["label"] = y
    frame.to_csv(frame_path, index=False)
    cfg = PipelineConfig(
        data=str(frame_path), seed=0, data_options=DataConfig(target="label", audit="strict")
    )
    save_config(cfg, tmp_path / WORKER_CONFIG)
    with pytest.raises(DataError, match="'leak' alone predicts the label"):
        main([str(tmp_path)])
