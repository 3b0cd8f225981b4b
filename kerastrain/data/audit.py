"""The data-quality audit: what is wrong with the data, before training on it.

Run between the split and training (``data_options.audit``), it looks for

- rows: exact duplicate rows (features and label), rows whose features
  appear in two splits (the same example in training and test: leakage),
  identical features with different labels;
- columns: constant and near-constant columns, a single column that predicts
  the label almost perfectly (suspected target leakage: a one-column ROC-AUC
  or R² of at least 0.99 on rows it was not fitted on; with more than two
  classes, the one-vs-rest ROC-AUC of every class), outliers by robust
  z-score, missing values, and drift between the training and test splits
  (Kolmogorov-Smirnov test and population stability index).

Everything is vectorized NumPy and pandas. The row checks hash every row
(64 bits, so a collision is vanishingly unlikely), never compare rows pair by
pair; the column checks read a seeded sample of at most
``data_options.audit_rows`` rows, and each result states how many rows it
read. Image arrays get the row checks only (a pixel is not a column worth
auditing). Row numbers are positions in the data as it is trained on (after
rows dropped on request).

Text columns (`Table.columns` kind ``"text"``) get their own checks instead
of the column checks, which treat a text as a category and say nothing true
of free text: nearly every text is a category of one row, so the drift test
compares categories that never recur (and misses a change in the texts'
lengths); a text's label looked up from the same text is memory, which the
repeated-text checks report by row, not a leaking column; an empty text is
read as no tokens, not imputed; a text has no outliers by z-score. Instead:
texts repeated within the training split and texts shared by the training
split and a held-out one (leakage), both compared after lower-casing and
collapsing whitespace (empty texts left out), empty rows, and drift of the
texts' lengths in tokens. Each text column's length
statistics are in `DataQuality.text`. The text checks read the rows the row
checks hash (every row in memory; a stream's sample).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from kerastrain.data.split import Splits
from kerastrain.data.stream import Stream
from kerastrain.data.tabular import Table, take_rows
from kerastrain.data.validate import rows as row_list
from kerastrain.errors import DataError, config_error, message
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "DataFinding",
    "DataQuality",
    "audit_data",
    "row_hashes",
    "duplicate_rows",
    "drop_duplicates",
    "token_counts",
    "leakage_error",
    "LEAKAGE_SCORE",
]

Severity = Literal["leakage", "warning", "info"]

#: A single column whose held-out ROC-AUC (binary; with more classes, the
#: one-vs-rest ROC-AUC of every class) or R² (regression) reaches this is
#: suspected target leakage.
LEAKAGE_SCORE = 0.99
#: A column whose most frequent value holds at least this share is near-constant.
NEAR_CONSTANT = 0.99
#: A robust (modified) z-score above this marks an outlier (Iglewicz and Hoaglin).
OUTLIER_Z = 3.5
#: Outliers are reported for a column only when at most this share of rows are.
OUTLIER_SHARE = 0.05
#: A missing rate at or above this is a warning (below, information).
MISSING_WARNING = 0.5
#: Drift: a population stability index at least this large ("a major shift")...
DRIFT_PSI = 0.25
#: ...and a test p-value below this, divided by the columns tested (Bonferroni).
DRIFT_ALPHA = 0.01
#: Quantile bins of the leakage and drift checks.
BINS = 20
#: Row numbers shown per finding.
SHOWN_ROWS = 10
#: Rows hashed per block (bounds the memory of the row checks).
HASH_BLOCK = 65_536
#: The punctuation the word tokenizer strips (`TextVectorization`'s
#: ``"lower_and_strip_punctuation"``), for counting a text's tokens.
_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclasses.dataclass(frozen=True)
class DataFinding:
    """One problem the audit found.

    Attributes:
        check: `"duplicates"`, `"cross_split_duplicates"`,
            `"conflicting_labels"`, `"constant"`, `"near_constant"`,
            `"target_leakage"`, `"outliers"`, `"missing"`, `"drift"`, or for
            text columns `"duplicate_texts"`, `"cross_split_texts"`,
            `"empty_texts"` and `"length_drift"`.
        severity: `"leakage"` (raised by `audit="strict"`), `"warning"` or
            `"info"`.
        message: What was found, with numbers.
        columns: The columns concerned (empty for row checks on arrays).
        rows: Up to 10 row numbers concerned.
        count: How many rows (or, for a column check, rows of the sample)
            are concerned.
        value: The statistic behind the finding (ROC-AUC, R², PSI, share),
            when there is one.
    """

    check: str
    severity: Severity
    message: str
    columns: tuple[str, ...] = ()
    rows: tuple[int, ...] = ()
    count: int = 0
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "columns": list(self.columns),
            "rows": list(self.rows),
            "count": self.count,
            "value": self.value,
        }


@dataclasses.dataclass
class DataQuality:
    """The audit's findings and what it read.

    Attributes:
        findings: Every finding, leakage first, then warnings, then information.
        rows: Rows in the data.
        rows_hashed: Rows the row checks hashed (every row, or a stream's sample).
        rows_sampled: Rows the column checks read (a seeded sample when the
            data has more than `data_options.audit_rows`).
        columns_checked: Columns the column checks looked at (0 for images).
        missing: Missing rate of each column that has missing values (in the
            sample; for a text column, its empty rows).
        seconds: Time the audit took.
        text: Each text column's length statistics: `rows` read,
            `mean_tokens`, `max_tokens`, `empty_rows` and the token `unit`
            (`"word"`, or `"character"` for the character tokenizer).
    """

    findings: list[DataFinding]
    rows: int
    rows_hashed: int
    rows_sampled: int
    columns_checked: int
    missing: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    text: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def of(self, check: str) -> list[DataFinding]:
        """The findings of one check (``of("drift")``)."""
        return [f for f in self.findings if f.check == check]

    @property
    def checks(self) -> set[str]:
        """The checks that found something."""
        return {f.check for f in self.findings}

    def describe(self) -> str:
        """One sentence: what was read, and how many findings of each severity."""
        counts = {s: sum(f.severity == s for f in self.findings) for s in ("leakage", "warning")}
        sample = (
            f"column checks on a sample of {self.rows_sampled:,} of {self.rows:,} rows"
            if self.rows_sampled < self.rows
            else f"column checks on all {self.rows:,} rows"
        )
        if not self.columns_checked:
            sample = "row checks only (images)"
        return (
            f"Data audit: {self.rows_hashed:,} rows hashed, {sample}; "
            f"{counts['leakage']} suspected leakage, {counts['warning']} warnings, "
            f"{len(self.findings) - sum(counts.values())} notes ({self.seconds:.2f}s)."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_hashed": self.rows_hashed,
            "rows_sampled": self.rows_sampled,
            "columns_checked": self.columns_checked,
            "missing": dict(self.missing),
            "seconds": self.seconds,
            "text": {k: dict(v) for k, v in self.text.items()},
            "findings": [f.to_dict() for f in self.findings],
        }

    def report_section(self) -> dict[str, Any]:
        """The report's "Data quality" section (`Section` keyword arguments)."""
        rows = [
            {
                "check": f.check,
                "severity": f.severity,
                "columns": ", ".join(f.columns[:8]) + (", ..." if len(f.columns) > 8 else ""),
                "rows": ", ".join(map(str, f.rows)),
                "count": f.count,
                "value": None if f.value is None else round(f.value, 4),
                "finding": f.message,
            }
            for f in self.findings
        ]
        text = self.describe()
        for name, stats in self.text.items():
            text += (
                f" Text column {name!r}: {stats['mean_tokens']:.1f} {stats['unit']}s per row on "
                f"average, at most {stats['max_tokens']}, {stats['empty_rows']} empty rows."
            )
        if not rows:
            text += " Nothing to report."
        return {"title": "Data quality", "text": text, "rows": rows, "key": "data-quality"}


# --------------------------------------------------------------------------- hashing


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, on a uint64 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


def _combine(h: np.ndarray, part: np.ndarray) -> np.ndarray:
    return _mix(h * _GOLDEN + part)


def _canonical(values: np.ndarray) -> np.ndarray:
    """Float values with one NaN and one zero (``-0.0 == 0.0``), as float64."""
    values = values.astype(np.float64) + 0.0
    values[np.isnan(values)] = np.nan
    return values


def _column_hash(values: np.ndarray) -> np.ndarray:
    """A uint64 per value: float bits for numbers, pandas' hash for text."""
    import pandas as pd

    if values.dtype.kind in "fiub":
        return _canonical(values).view(np.uint64)
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=True)


def _array_hash(block: np.ndarray) -> np.ndarray:
    """A uint64 per row of an array block, from its bytes in 8-byte words."""
    flat = block.reshape(len(block), -1)
    if flat.dtype.kind == "f":
        flat = _canonical(flat)
    flat = np.ascontiguousarray(flat)
    raw = flat.view(np.uint8).reshape(len(flat), -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(raw), pad), np.uint8)], axis=1)
    words = raw.view(np.uint64)
    h = np.full(len(words), np.uint64(raw.shape[1]), np.uint64)
    for k in range(words.shape[1]):
        h = _combine(h, words[:, k])
    return h


def _block_hash(block: Any) -> np.ndarray:
    """Row hashes of rows read from a `Stream`: an array, or a dict of
    columns (a table streamed from its files)."""
    return row_hashes(block) if isinstance(block, dict) else _array_hash(np.asarray(block))


def row_hashes(x: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit hash of each row's features (rows with equal features, and
    only those up to a 2⁻⁶⁴ chance, hash alike).

    Args:
        x: A table's dict of columns, an array, or a `Stream`.
        rows: Hash only these rows. Defaults to `None` (every row).

    Returns:
        One uint64 per row, in order.
    """
    if isinstance(x, dict):
        n = len(next(iter(x.values())))
        picked = np.arange(n) if rows is None else rows
        h = np.zeros(len(picked), np.uint64)
        for values in x.values():
            h = _combine(h, _column_hash(values[picked]))
        return h
    n = len(x)
    picked = np.arange(n) if rows is None else rows
    parts = [_block_hash(x[picked[i : i + HASH_BLOCK]]) for i in range(0, len(picked), HASH_BLOCK)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _label_hash(y: np.ndarray) -> np.ndarray:
    return _column_hash(np.asarray(y))


def duplicate_rows(x: Any, y: np.ndarray) -> np.ndarray:
    """Positions of the rows that repeat an earlier row exactly (features and
    label), the first of each group kept.

    Args:
        x: A table's dict of columns or an array.
        y: The labels.

    Returns:
        The sorted positions of the repeats.
    """
    import pandas as pd

    whole = _combine(row_hashes(x), _label_hash(y))
    return np.flatnonzero(pd.Series(whole).duplicated(keep="first").to_numpy())


def drop_duplicates(
    x: Any, y: np.ndarray, parts: Mapping[str, np.ndarray] | None = None, *, source: str = "data"
) -> tuple[Any, np.ndarray, dict[str, np.ndarray] | None, np.ndarray]:
    """``data_options.deduplicate``: the data without its exact duplicate rows
    (the first of each group kept), logging how many and which were dropped.

    Args:
        x: A table's dict of columns or an array.
        y: The labels.
        parts: Row indices of splits the source fixed itself (TFDS), renumbered
            for the rows kept. Defaults to `None`.
        source: What the data is, for the log. Defaults to `"data"`.

    Returns:
        The features, labels and parts kept, and the positions dropped.

    Raises:
        ConfigError: For streamed data (its rows are not in memory to drop).
    """
    if isinstance(x, Stream):
        raise config_error(
            "data_options.deduplicate",
            True,
            "False for data streamed from files (its rows are read every epoch, not held to "
            "drop); the audit still reports duplicates in a sample",
        )
    dropped = duplicate_rows(x, y)
    if not len(dropped):
        logger.info("deduplicate: %s has no duplicate rows.", source)
        return x, y, dict(parts) if parts else parts, dropped
    keep = np.ones(len(y), bool)
    keep[dropped] = False
    logger.warning(
        "deduplicate: dropped %d duplicate rows of %s (rows %s), keeping the first of each; "
        "%d rows remain.",
        len(dropped),
        source,
        row_list(dropped, SHOWN_ROWS),
        int(keep.sum()),
    )
    kept = np.flatnonzero(keep)
    x = take_rows(x, kept) if isinstance(x, dict) else x[kept]
    if parts:
        new_index = np.cumsum(keep) - 1
        parts = {k: new_index[v[keep[v]]] for k, v in parts.items()}
    return x, y[kept], parts, dropped


# --------------------------------------------------------------------------- row checks


def _shown(index: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.asarray(index)[:SHOWN_ROWS])


def _row_checks(
    features: np.ndarray, y: np.ndarray, positions: np.ndarray, task: Task, split_of: np.ndarray
) -> list[DataFinding]:
    """Duplicates, duplicates across splits, and conflicting labels, from the
    hashes of the rows ``positions`` (``split_of``: 0 train, 1 validation,
    2 test, per row)."""
    import pandas as pd

    findings = []
    labels = _label_hash(y[positions])
    whole = _combine(features, labels)
    repeats = pd.Series(whole).duplicated(keep="first").to_numpy()
    if repeats.any():
        where = positions[repeats]
        findings.append(
            DataFinding(
                "duplicates",
                "warning",
                f"{int(repeats.sum())} rows repeat an earlier row exactly (features and label): "
                f"rows {row_list(where, SHOWN_ROWS)}. They weigh twice in training; "
                "data_options.deduplicate=True drops them before the split.",
                rows=_shown(where),
                count=int(repeats.sum()),
            )
        )
    frame = pd.DataFrame({"f": features, "y": labels})
    distinct = frame.groupby("f")["y"].transform("nunique").to_numpy()
    conflicting = distinct > 1
    if conflicting.any():
        where = positions[conflicting]
        groups = len(np.unique(features[conflicting]))
        findings.append(
            DataFinding(
                "conflicting_labels",
                "warning" if task.is_classification else "info",
                f"{groups} groups of rows have identical features but different labels "
                f"({int(conflicting.sum())} rows: {row_list(where, SHOWN_ROWS)}); no model can get them all "
                "right, and they may be labelling errors.",
                rows=_shown(where),
                count=int(conflicting.sum()),
            )
        )
    train_features = features[split_of == 0]
    for code, name in ((2, "test"), (1, "validation")):
        held = split_of == code
        if not held.any() or not len(train_features):
            continue
        shared = held & pd.Series(features).isin(pd.unique(train_features)).to_numpy()
        if shared.any():
            where = positions[shared]
            findings.append(
                DataFinding(
                    "cross_split_duplicates",
                    "leakage",
                    f"{int(shared.sum())} {name} rows have the same features as a training row "
                    f"(rows {row_list(where, SHOWN_ROWS)}): the {name} score measures memory, not "
                    "generalization. Deduplicate (data_options.deduplicate=True) or split by a "
                    "key that keeps copies together.",
                    rows=_shown(where),
                    count=int(shared.sum()),
                )
            )
    return findings


# --------------------------------------------------------------------------- column checks


def _columns(
    x: Any, rows: np.ndarray, table: Table | None, names: Sequence[str] | None
) -> dict[str, tuple[np.ndarray, bool]]:
    """Each column of the rows ``rows``: its values and whether it is categorical."""
    if isinstance(x, dict):
        kinds = table.columns if table is not None else {}
        sources = table.sources if table is not None else {}
        return {
            sources.get(k, k): (v[rows], kinds.get(k) == "categorical" or v.dtype == object)
            for k, v in x.items()
        }
    block = x[rows]
    if isinstance(block, dict):  # rows of a table streamed from its files
        return _columns(block, np.arange(len(rows)), table, names)
    block = np.asarray(block).reshape(len(rows), -1).astype(np.float64)
    labels = list(names) if names and len(names) == block.shape[1] else None
    return {
        (labels[j] if labels else f"x[{j}]"): (block[:, j], False) for j in range(block.shape[1])
    }


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return values == ""
    return np.isnan(values)


def _codes(values: np.ndarray, categorical: bool, edges: np.ndarray | None) -> np.ndarray:
    """Bin codes: quantile bins for numbers, one code per category (missing: -1)."""
    import pandas as pd

    missing = _missing_mask(values)
    if categorical:
        codes = pd.factorize(np.where(missing, None, values.astype(object)))[0]
        return codes
    codes = np.searchsorted(edges, values, side="right").astype(np.int64)
    codes[missing] = -1
    return codes


def _edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    present = values[~np.isnan(values)]
    if not len(present):
        return np.zeros(0)
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC from ranks (ties share their average rank): the
    Mann-Whitney statistic, one sort instead of a ROC curve."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return 0.5
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _leakage_score(
    codes: np.ndarray, values: np.ndarray, y: np.ndarray, task: Task, fit: np.ndarray
) -> float | None:
    """How well the column alone predicts the label on rows it was not fitted
    on: ROC-AUC of the label frequencies of each bin (with more than two
    classes, the lowest one-vs-rest ROC-AUC of a class), or
    the R² of each bin's mean target (regression; the better of that and a
    straight line)."""
    score_rows = ~fit
    if score_rows.sum() < 20:
        return None
    shift = codes - codes.min()
    width = int(shift.max()) + 1
    if task.is_classification:
        k = task.num_classes
        counts = np.zeros((width, k))
        np.add.at(counts, (shift[fit], y[fit].astype(np.int64)), 1.0)
        proba = (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + k)
        p = proba[shift[score_rows]]
        truth = y[score_rows].astype(np.int64)
        present = np.unique(truth)
        if len(present) < 2:
            return None
        if k == 2:
            binned = _auc(truth == 1, p[:, 1])
            if values.dtype == object:
                return binned
            ok = ~np.isnan(values[score_rows])  # a monotone column: its raw values rank
            if len(np.unique(truth[ok])) < 2:
                return binned
            raw = _auc(truth[ok] == 1, values[score_rows][ok])
            return max(binned, raw, 1.0 - raw)
        scores = [_auc(truth == c, p[:, c]) for c in present]
        # One class set apart lifts the mean of one-vs-rest AUCs near 1 for a
        # column that still confuses the others (iris's petal width: 1.0,
        # 0.98, 0.99, mean 0.99): with more than two classes, every class
        # must be told apart from the rest (the worst one-vs-rest AUC).
        return float(np.min(scores))
    target = y.astype(np.float64)
    sums = np.bincount(shift[fit], weights=target[fit], minlength=width)
    counts = np.bincount(shift[fit], minlength=width)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), target[fit].mean())
    truth = target[score_rows]
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total <= 0:
        return None
    best = 1.0 - float(np.sum((truth - means[shift[score_rows]]) ** 2)) / total
    if values.dtype != object:
        ok = fit & ~np.isnan(values)
        if ok.sum() > 2 and np.ptp(values[ok]) > 0:
            slope, intercept = np.polyfit(values[ok], target[ok], 1)
            held = score_rows & ~np.isnan(values)
            if held.any():
                line = 1.0 - float(
                    np.sum((target[held] - (slope * values[held] + intercept)) ** 2)
                ) / max(float(np.sum((target[held] - target[held].mean()) ** 2)), 1e-300)
                best = max(best, line)
    return best


def _psi(expected: np.ndarray, actual: np.ndarray, width: int) -> float:
    e = np.bincount(expected, minlength=width) / max(len(expected), 1)
    a = np.bincount(actual, minlength=width) / max(len(actual), 1)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _drift(
    values: np.ndarray, categorical: bool, train: np.ndarray, held: np.ndarray
) -> tuple[float, float, np.ndarray] | None:
    """PSI and p-value of one column between the training and held-out rows
    of the sample, and the held-out rows outside the training range."""
    from scipy import stats

    a, b = values[train], values[held]
    a, b = a[~_missing_mask(a)], b[~_missing_mask(b)]
    if len(a) < 20 or len(b) < 20:
        return None
    if categorical:
        import pandas as pd

        codes = pd.factorize(np.concatenate([a, b]).astype(object))[0]
        ca, cb = codes[: len(a)], codes[len(a) :]
        width = int(codes.max()) + 1
        psi = _psi(ca, cb, width)
        table = np.stack([np.bincount(ca, minlength=width), np.bincount(cb, minlength=width)])
        table = table[:, table.sum(axis=0) > 0]
        p = 1.0 if table.shape[1] < 2 else float(stats.chi2_contingency(table)[1])
        return psi, p, np.zeros(0, np.int64)
    edges = _edges(a.astype(np.float64), 10)
    width = len(edges) + 1
    psi = _psi(np.searchsorted(edges, a, "right"), np.searchsorted(edges, b, "right"), width)
    p = float(stats.ks_2samp(a, b).pvalue)
    lo, hi = np.quantile(a, [0.01, 0.99])
    outside = np.flatnonzero((values[held] < lo) | (values[held] > hi))
    return psi, p, outside


def _column_checks(
    columns: Mapping[str, tuple[np.ndarray, bool]],
    y: np.ndarray,
    positions: np.ndarray,
    task: Task,
    split_of: np.ndarray,
    seed: int,
) -> tuple[list[DataFinding], dict[str, float]]:
    findings: list[DataFinding] = []
    missing_rates: dict[str, float] = {}
    n = len(positions)
    fit = np.zeros(n, bool)
    fit[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
    train, held = split_of == 0, split_of == 2
    held_name = "test"
    if not held.any():
        held, held_name = split_of == 1, "validation"
    tests = max(1, len(columns))
    for name, (values, categorical) in columns.items():
        missing = _missing_mask(values)
        present = values[~missing]
        rate = float(missing.mean()) if n else 0.0
        if rate > 0:
            missing_rates[name] = rate
            findings.append(
                DataFinding(
                    "missing",
                    "warning" if rate >= MISSING_WARNING else "info",
                    f"Column {name!r} is missing in {rate:.1%} of the rows read "
                    f"({int(missing.sum())} of {n}); they are imputed.",
                    columns=(name,),
                    rows=_shown(positions[missing]),
                    count=int(missing.sum()),
                    value=rate,
                )
            )
        if not len(present):
            continue
        uniques, counts = np.unique(present, return_counts=True)
        if len(uniques) == 1:
            findings.append(
                DataFinding(
                    "constant",
                    "warning",
                    f"Column {name!r} holds one value ({_plain(uniques[0])!r}) in every row "
                    "read: it carries no information; drop it "
                    f"(data_options.columns={{{name!r}: 'drop'}}).",
                    columns=(name,),
                    count=n,
                    value=1.0,
                )
            )
            continue
        share = float(counts.max() / len(present))
        if share >= NEAR_CONSTANT:
            common = uniques[counts.argmax()]
            rare = np.flatnonzero(~missing & (values != common))
            findings.append(
                DataFinding(
                    "near_constant",
                    "info",
                    f"Column {name!r} holds {_plain(common)!r} in {share:.2%} of the rows that have a "
                    f"value; only {len(rare)} rows differ.",
                    columns=(name,),
                    rows=_shown(positions[rare]),
                    count=len(rare),
                    value=share,
                )
            )
        numeric = not categorical and values.dtype != object
        edges = _edges(values) if numeric else None
        codes = _codes(values, not numeric, edges)
        score = _leakage_score(codes, values, y, task, fit)
        if score is not None and score >= LEAKAGE_SCORE:
            metric = "R²"
            if task.is_classification:
                metric = "ROC-AUC" if task.num_classes == 2 else "worst one-vs-rest ROC-AUC"
            findings.append(
                DataFinding(
                    "target_leakage",
                    "leakage",
                    f"Column {name!r} alone predicts the label with {metric} {score:.4f} on rows "
                    "it was not fitted on: suspected target leakage (a copy or a consequence of "
                    "the label). Check how it is measured; drop it "
                    f"(data_options.columns={{{name!r}: 'drop'}}) if it is not known at "
                    "prediction time.",
                    columns=(name,),
                    value=score,
                )
            )
        if numeric:
            median = np.nanmedian(values)
            mad = np.nanmedian(np.abs(values - median))
            scale = 1.4826 * mad if mad > 0 else 1.2533 * np.nanmean(np.abs(values - median))
            if scale > 0:
                with np.errstate(invalid="ignore"):
                    z = np.abs(values - median) / scale
                far = np.flatnonzero(z > OUTLIER_Z)
                # Beyond a few percent, "outliers" are a second mode or a
                # skewed shape, which a robust z-score does not describe.
                if 0 < len(far) <= OUTLIER_SHARE * n:
                    order = far[np.argsort(-z[far], kind="stable")]
                    findings.append(
                        DataFinding(
                            "outliers",
                            "info",
                            f"Column {name!r}: {len(far)} rows ({len(far) / n:.1%}) lie more "
                            f"than {OUTLIER_Z} robust standard deviations from the median "
                            f"({median:.4g}); the farthest is {values[order[0]]:.4g}.",
                            columns=(name,),
                            rows=_shown(positions[order]),
                            count=len(far),
                            value=float(z[order[0]]),
                        )
                    )
        if train.any() and held.any():
            drift = _drift(values, not numeric, train, held)
            if drift is not None:
                psi, p, outside = drift
                if psi >= DRIFT_PSI and p < DRIFT_ALPHA / tests:
                    findings.append(
                        DataFinding(
                            "drift",
                            "warning",
                            f"Column {name!r} is distributed differently in the {held_name} "
                            f"split than in training (PSI {psi:.3f}, p-value {p:.2g}"
                            + (
                                f"; {len(outside)} {held_name} rows lie outside the training "
                                "1%-99% range"
                                if len(outside)
                                else ""
                            )
                            + "): the score there may not predict the score on new data.",
                            columns=(name,),
                            rows=_shown(positions[np.flatnonzero(held)[outside]]),
                            count=len(outside),
                            value=psi,
                        )
                    )
    return findings, missing_rates


# --------------------------------------------------------------------------- text columns


def _normalized_texts(values: np.ndarray) -> np.ndarray:
    """Texts lower-cased, with runs of whitespace made one space and the
    ends stripped (``"Good  Movie "`` and ``"good movie"`` compare equal)."""
    import pandas as pd

    texts = pd.Series(np.asarray(values, dtype=object)).fillna("").astype(str)
    return texts.str.lower().str.replace(r"\s+", " ", regex=True).str.strip().to_numpy(object)


def token_counts(values: np.ndarray, tokenizer: str = "word") -> np.ndarray:
    """Tokens in each text as the tokenizer cuts it: characters for
    ``"character"``, else words (lower-cased, punctuation stripped, split at
    whitespace, as the ``"word"`` tokenizer does)."""
    import pandas as pd

    texts = pd.Series(np.asarray(values, dtype=object)).fillna("").astype(str)
    if tokenizer == "character":
        return texts.str.len().to_numpy(np.int64)
    words = texts.str.lower().str.replace(_PUNCTUATION, "", regex=True).str.split()
    return words.str.len().fillna(0).to_numpy(np.int64)


def _text_checks(
    name: str,
    values: np.ndarray,
    positions: np.ndarray,
    split_of: np.ndarray,
    tokenizer: str,
) -> tuple[list[DataFinding], dict[str, Any], float]:
    """One text column's findings, its length statistics and its empty rate,
    from the rows ``positions`` (``split_of`` per row: 0 train, 1
    validation, 2 test)."""
    import pandas as pd

    findings = []
    normal = _normalized_texts(values)
    empty = normal == ""
    counts = token_counts(values, tokenizer)
    unit = "character" if tokenizer == "character" else "word"
    stats = {
        "rows": len(values),
        "mean_tokens": float(counts.mean()) if len(counts) else 0.0,
        "max_tokens": int(counts.max()) if len(counts) else 0,
        "empty_rows": int((counts == 0).sum()),
        "unit": unit,
    }
    rate = float(empty.mean()) if len(empty) else 0.0
    if empty.any():
        findings.append(
            DataFinding(
                "empty_texts",
                "warning" if rate >= MISSING_WARNING else "info",
                f"Text column {name!r} is empty or blank in {int(empty.sum())} of the "
                f"{len(empty)} rows read ({rate:.1%}): rows {row_list(positions[empty], SHOWN_ROWS)}"
                "; the model reads them as no tokens.",
                columns=(name,),
                rows=_shown(positions[empty]),
                count=int(empty.sum()),
                value=rate,
            )
        )
    hashes = pd.util.hash_array(normal, categorize=True)
    train = (split_of == 0) & ~empty
    repeats = np.zeros(len(values), bool)
    repeats[train] = pd.Series(hashes[train]).duplicated(keep="first").to_numpy()
    if repeats.any():
        where = positions[repeats]
        findings.append(
            DataFinding(
                "duplicate_texts",
                "warning",
                f"Text column {name!r}: {int(repeats.sum())} training rows repeat the text of an "
                f"earlier training row (ignoring case and whitespace): rows "
                f"{row_list(where, SHOWN_ROWS)}. Repeated texts weigh more in training.",
                columns=(name,),
                rows=_shown(where),
                count=int(repeats.sum()),
            )
        )
    seen = pd.unique(hashes[train])
    for code, split in ((2, "test"), (1, "validation")):
        held = (split_of == code) & ~empty
        if not held.any() or not len(seen):
            continue
        shared = held & pd.Series(hashes).isin(seen).to_numpy()
        if shared.any():
            where = positions[shared]
            findings.append(
                DataFinding(
                    "cross_split_texts",
                    "leakage",
                    f"Text column {name!r}: {int(shared.sum())} {split} rows have the text of a "
                    f"training row (ignoring case and whitespace): rows "
                    f"{row_list(where, SHOWN_ROWS)}. The {split} score partly measures memory; "
                    "remove the repeated texts before the split.",
                    columns=(name,),
                    rows=_shown(where),
                    count=int(shared.sum()),
                )
            )
    held = split_of == 2 if (split_of == 2).any() else split_of == 1
    held_name = "test" if (split_of == 2).any() else "validation"
    if (split_of == 0).any() and held.any():
        drift = _drift(counts.astype(np.float64), False, split_of == 0, held)
        if drift is not None:
            psi, p, outside = drift
            if psi >= DRIFT_PSI and p < DRIFT_ALPHA:
                findings.append(
                    DataFinding(
                        "length_drift",
                        "warning",
                        f"Text column {name!r}: the {held_name} texts' lengths differ from the "
                        f"training texts' (PSI {psi:.3f}, p-value {p:.2g}; mean "
                        f"{counts[held].mean():.1f} against {counts[split_of == 0].mean():.1f} "
                        f"{unit}s): the score there may not predict the score on new data.",
                        columns=(name,),
                        rows=_shown(positions[np.flatnonzero(held)[outside]]),
                        count=len(outside),
                        value=psi,
                    )
                )
    return findings, stats, rate


# --------------------------------------------------------------------------- the audit


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def audit_data(
    x: Any,
    y: np.ndarray,
    task: Task,
    splits: Splits,
    *,
    mode: bool | str = True,
    seed: int = 0,
    table: Table | None = None,
    feature_names: Sequence[str] | None = None,
    sample_rows: int = 50_000,
    tokenizer: str = "word",
) -> DataQuality:
    """Audits the data's quality (see the module's docstring).

    Findings are logged (leakage and warnings as warnings, notes at info) and
    returned.

    Args:
        x: All features: a table's dict of columns, an array, or a `Stream`.
        y: All labels (class indices, or regression targets).
        task: The task.
        splits: The row indices of each split.
        mode: `True`, or `"strict"` to raise on leakage. Defaults to `True`.
        seed: Seed of the samples. Defaults to `0`.
        table: A table's column kinds and names. Defaults to `None`.
        feature_names: An array's column names. Defaults to `None`.
        sample_rows: Rows read by the column checks at most (and hashed, for
            a stream). Defaults to `50_000`.
        tokenizer: `data_options.tokenizer`, the unit a text column's
            lengths are counted in. Defaults to `"word"`.

    Returns:
        The findings.

    Raises:
        DataError: With `mode="strict"`, when rows (or a text column's
            texts) are shared by two splits or a column is suspected of
            target leakage, naming them.

    Example:
        >>> quality = audit_data(x, y, task, splits)  # doctest: +SKIP
        >>> [f.check for f in quality.findings]  # doctest: +SKIP
        ['cross_split_duplicates', 'constant']
    """
    start = time.perf_counter()
    y = np.asarray(y)
    n = len(y)
    if isinstance(x, Stream):  # reading every file to hash it would cost an epoch
        hashed = _sample(n, sample_rows, seed)
    else:
        hashed = np.arange(n)
    split_of = np.full(n, -1, np.int8)
    for code, part in enumerate((splits.train, splits.val, splits.test)):
        split_of[part] = code
    sampled = _sample(n, sample_rows, seed + 1)
    hashed_from, sampled_from = x, x
    if getattr(x, "batched", False):
        # A table streamed from its files: both samples' rows are read in
        # one pass over the files (each `read` is one), then picked apart.
        both = np.union1d(hashed, sampled)
        block = x.read(both)
        hashed_from = {k: v[np.searchsorted(both, hashed)] for k, v in block.items()}
        sampled_from = {k: v[np.searchsorted(both, sampled)] for k, v in block.items()}
        del block
    findings = _row_checks(
        row_hashes(hashed_from, None if hashed_from is not x else hashed),
        y,
        hashed,
        task,
        split_of[hashed],
    )
    images = not isinstance(x, dict) and len(x.shape) >= 3
    missing: dict[str, float] = {}
    text_stats: dict[str, dict[str, Any]] = {}
    columns_checked = 0
    if not images and n:
        if sampled_from is x:
            columns = _columns(x, sampled, table, feature_names)
        else:
            columns = _columns(sampled_from, np.arange(len(sampled)), table, feature_names)
        texts = [k for k, kind in (table.columns if table else {}).items() if kind == "text"]
        for key in texts:  # their own checks, on the hashed rows
            name = table.sources.get(key, key)
            columns.pop(name, None)
            values = hashed_from[key][hashed] if hashed_from is x else hashed_from[key]
            more, text_stats[name], rate = _text_checks(
                name, values, hashed, split_of[hashed], tokenizer
            )
            findings += more
            if rate > 0:
                missing[name] = rate
        columns_checked = len(columns) + len(texts)
        more, rates = _column_checks(columns, y[sampled], sampled, task, split_of[sampled], seed)
        findings += more
        missing.update(rates)
    order = {"leakage": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    quality = DataQuality(
        findings=findings,
        rows=n,
        rows_hashed=len(hashed),
        rows_sampled=len(sampled) if columns_checked else 0,
        columns_checked=columns_checked,
        missing=missing,
        seconds=time.perf_counter() - start,
        text=text_stats,
    )
    logger.info(quality.describe())
    for finding in findings:
        level = logging.INFO if finding.severity == "info" else logging.WARNING
        logger.log(level, "Data audit (%s): %s", finding.check, finding.message)
    leaks = [f for f in findings if f.severity == "leakage"]
    if mode == "strict" and leaks:
        raise leakage_error(leaks)
    return quality


def leakage_error(leaks: Sequence[DataFinding]) -> DataError:
    """The `DataError` of `audit="strict"` for the leakage findings ``leaks``."""
    return DataError(
        message(
            "The data audit found leakage between the data and what the model is scored "
            "on: " + " ".join(f.message for f in leaks),
            received={"data_options.audit": "strict"},
            allowed="Fix the data (data_options.deduplicate=True drops duplicate rows "
            "before the split; remove texts repeated across splits; drop a leaking column "
            "with data_options.columns), or set "
            "data_options.audit=True to train anyway with warnings",
        )
    )
