"""The data-quality audit for callers that prepare data outside `fit_pipeline`.

`fit_pipeline` audits its prepared data in its "audit" stage. Cross-validation
and a tuning worker prepare the data themselves; they audit it here once, with
the same `data_options.audit` (`"strict"` raises before any training):

- `audit_prepared`: the audit of prepared data on its own splits (a tuning
  worker's, the same the chief audited).
- `audit_folds`: one audit of the whole data before cross-validation's folds
  (not one per fold): every column check on all rows, and rows whose features
  recur in another fold as cross-split duplicates (in the folds where one copy
  trains and another is held out, the score measures memory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.audit import (
    SHOWN_ROWS,
    DataFinding,
    DataQuality,
    audit_data,
    leakage_error,
    row_hashes,
)
from kerastrain.data.split import Splits
from kerastrain.data.validate import rows as row_list

logger = logging.getLogger(__name__)

__all__ = ["audit_prepared", "audit_folds", "cross_fold_duplicates"]


def audit_prepared(prepared: Any, options: DataConfig, seed: int) -> DataQuality | None:
    """The audit of ``prepared`` (a `Prepared`) on its splits, as
    `fit_pipeline` runs it; None when `options.audit` is off.

    Raises:
        DataError: With `audit="strict"`, on leakage (see `audit_data`).
    """
    if not options.audit:
        return None
    return audit_data(
        prepared.x,
        prepared.y,
        prepared.task,
        prepared.splits,
        mode=options.audit,
        seed=seed,
        table=prepared.table,
        feature_names=prepared.feature_names,
        sample_rows=options.audit_rows,
        tokenizer=options.tokenizer,
    )


def cross_fold_duplicates(
    x: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]], num_rows: int
) -> DataFinding | None:
    """Rows whose features recur in another fold (rows no fold holds out,
    as time-series folds' first block, count as one more fold), or None."""
    import pandas as pd

    fold_of = np.full(num_rows, -1, np.int32)
    for i, (_, held) in enumerate(folds):
        fold_of[held] = i
    hashes = row_hashes(x)
    frame = pd.DataFrame({"h": hashes, "fold": fold_of})
    shared = (frame.groupby("h")["fold"].transform("nunique") > 1).to_numpy()
    if not shared.any():
        return None
    where = np.flatnonzero(shared)
    return DataFinding(
        "cross_split_duplicates",
        "leakage",
        f"{len(where)} rows have the same features as a row of another cross-validation fold "
        f"(rows {row_list(where, SHOWN_ROWS)}): in the folds where one copy trains and another "
        "is held out, the score measures memory, not generalization. Deduplicate "
        "(data_options.deduplicate=True) or keep copies together in one fold.",
        rows=tuple(int(r) for r in where[:SHOWN_ROWS]),
        count=len(where),
    )


def audit_folds(
    prepared: Any,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    options: DataConfig,
    seed: int,
) -> DataQuality | None:
    """One audit of the whole data of a cross-validation, before its folds
    train; None when `options.audit` is off.

    The column checks (constant columns, one-column target leakage, outliers,
    missing rates) and the row checks (duplicates, conflicting labels) see
    every row as one split; the cross-split duplicates are those across
    folds (`cross_fold_duplicates`). Drift between splits is not checked:
    the folds are the splits, and each is scored in turn.

    Raises:
        DataError: With `audit="strict"`, on rows shared by two folds or a
            column suspected of target leakage.
    """
    if not options.audit:
        return None
    everything = Splits(
        train=np.arange(prepared.num_rows),
        val=np.zeros(0, np.int64),
        test=np.zeros(0, np.int64),
    )
    quality = audit_data(
        prepared.x,
        prepared.y,
        prepared.task,
        everything,
        mode=True,
        seed=seed,
        table=prepared.table,
        feature_names=prepared.feature_names,
        sample_rows=options.audit_rows,
        tokenizer=options.tokenizer,
    )
    shared = cross_fold_duplicates(prepared.x, folds, prepared.num_rows)
    if shared is not None:
        logger.warning("Data audit (%s): %s", shared.check, shared.message)
        quality.findings.insert(0, shared)
    leaks = [f for f in quality.findings if f.severity == "leakage"]
    if options.audit == "strict" and leaks:
        raise leakage_error(leaks)
    return quality
