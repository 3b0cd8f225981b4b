"""`Section`: the one way a stage hands the report its part.

The tuning and compression stages (or a user) build `Section`\\ s and the
pipeline passes them to `write_report`; a stage that did not run passes none.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Section", "scores_section", "METRIC_COLUMNS"]

#: Columns of the metrics table, in order, when any row has them.
METRIC_COLUMNS = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_weighted",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "ece",
    "top_3_accuracy",
    "mae",
    "rmse",
    "r2",
    "examples",
    "threshold",
    "max_abs_diff",
    "agreement",
)


@dataclasses.dataclass
class Section:
    """One section of the report, for stages that build their own.

    The tuning and compression stages (or a user) pass these to
    `write_report(sections=[...])`; a stage that did not run passes none.

    Attributes:
        title: The heading.
        text: Plain text, escaped; blank lines separate paragraphs.
            Defaults to `""`.
        rows: A table, one mapping per row (the columns are the union of the
            keys, in first-seen order). Defaults to `()`.
        images: PNG files to embed (copied beside the report when elsewhere).
            Defaults to `()`.
        html: A trusted HTML fragment, inserted as is. Defaults to `""`.
        key: The section's id in the page. Defaults to the title, slugged.

    Example:
        >>> tuning = Section("Tuning", text="12 trials, best val_accuracy 0.97.",
        ...                  rows=[{"trial": 3, "learning_rate": 1e-3, "val_accuracy": 0.97}])
    """

    title: str
    text: str = ""
    rows: Sequence[Mapping[str, Any]] = ()
    images: Sequence[str | os.PathLike] = ()
    html: str = ""
    key: str | None = None

    @property
    def slug(self) -> str:
        return self.key or _slug(self.title)


def scores_section(
    title: str,
    scores: Mapping[str, Mapping[str, Any]],
    *,
    text: str = "",
    columns: Sequence[str] = METRIC_COLUMNS,
    key: str | None = None,
) -> Section:
    """A section comparing several models' metrics side by side (ensemble
    members and the ensemble, compressed variants, top trials).

    Args:
        title: The heading.
        scores: Row name to its metrics.
        text: A sentence above the table. Defaults to `""`.
        columns: Metrics shown, when any row has them. Defaults to `METRIC_COLUMNS`.
        key: The section's id. Defaults to the title, slugged.

    Returns:
        The section.
    """
    shown = [c for c in columns if any(c in m for m in scores.values())]
    rows = [
        {"model": where, **{c: values.get(c) for c in shown}} for where, values in scores.items()
    ]
    return Section(title, text=text, rows=rows, key=key)


def _slug(title: str) -> str:
    """The title as an HTML id: lower case, words joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
