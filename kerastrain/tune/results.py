"""The search's results: one row per trial, a CSV table, and the score plot."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kerastrain.figures import figure
from kerastrain.files import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["trial_rows", "write_table", "plot_scores", "FIXED_COLUMNS"]

FIXED_COLUMNS = (
    "trial",
    "status",
    "score",
    "epochs",
    "initial_epoch",
    "epochs_run",
    "bracket",
    "round",
    "parent",
    "duration_s",
    "rss_mb",
    "tuner",
    "reason",
)


def _record(trial_dir: Path) -> dict[str, Any]:
    path = trial_dir / "kerastrain.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _reason(message: str | None) -> str | None:
    """The last line of KerasTuner's traceback text: the error itself."""
    if not message:
        return None
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else None


def trial_rows(oracle: Any, trials_dir: Path) -> list[dict[str, Any]]:
    """One row per trial, in the order the trials were created.

    Args:
        oracle: The (chief's or in-process) oracle holding every trial.
        trials_dir: The folder of the trial sub-folders.

    Returns:
        Mappings with `FIXED_COLUMNS` and one key per parameter.
    """
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        record = _record(trials_dir / f"trial_{trial_id}")
        values = {
            k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")
        }
        status = str(trial.status)
        score = trial.score if status == "COMPLETED" else None
        row = {
            "trial": trial_id,
            "status": status,
            "score": None if score is None or not math.isfinite(score) else float(score),
            "epochs": record.get("epochs"),
            "initial_epoch": record.get("initial_epoch"),
            "epochs_run": record.get("epochs_run"),
            "bracket": trial.hyperparameters.values.get("tuner/bracket"),
            "round": trial.hyperparameters.values.get("tuner/round"),
            "parent": trial.hyperparameters.values.get("tuner/trial_id"),
            "duration_s": record.get("duration_s"),
            "rss_mb": record.get("rss_mb"),
            "tuner": record.get("tuner"),
            "reason": record.get("reason") if status != "COMPLETED" else None,
        }
        if status in ("FAILED", "INVALID") and not row["reason"]:
            row["reason"] = _reason(trial.message)
        row.update(values)
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    params: list[str] = []
    for row in rows:
        params.extend(k for k in row if k not in FIXED_COLUMNS and k not in params)
    return ["trial", "status", "score", *params, *FIXED_COLUMNS[3:]]


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Writes the rows as CSV (atomically); every trial, its values, score,
    status, epochs and duration."""
    columns = _columns(rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return path


def plot_scores(
    rows: Sequence[Mapping[str, Any]], objective: Mapping[str, str], path: Path
) -> Path | None:
    """Score by trial (with the best so far), and by bracket for Hyperband."""
    done = [r for r in rows if r["score"] is not None]
    if not done:
        return None
    hyperband = any(r.get("bracket") is not None for r in done)
    with figure(
        path, 1, 2 if hyperband else 1, figsize=(11 if hyperband else 6, 3.8), squeeze=False
    ) as (_, axes):
        _draw_scores(axes[0], rows, done, objective, hyperband)
    return path


def _draw_scores(
    axes: Any,
    rows: Sequence[Mapping[str, Any]],
    done: Sequence[Mapping[str, Any]],
    objective: Mapping[str, str],
    hyperband: bool,
) -> None:
    """Score by trial on the first axes; by Hyperband bracket on the second."""
    ax = axes[0]
    numbers = [int(r["trial"]) + 1 for r in done]
    scores = [r["score"] for r in done]
    ax.scatter(numbers, scores, s=18, label="trial")
    failed = [int(r["trial"]) + 1 for r in rows if r["status"] != "COMPLETED"]
    if failed:
        ax.scatter(failed, [min(scores)] * len(failed), marker="x", color="tab:red", label="failed")
    pick = min if objective["direction"] == "min" else max
    best, running = [], None
    for s in scores:
        running = s if running is None else pick(running, s)
        best.append(running)
    ax.step(numbers, best, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective["name"])
    ax.set_title(f"{objective['name']} by trial")
    ax.legend()
    ax.grid(alpha=0.3)
    if hyperband:
        ax = axes[1]
        for rnd in sorted({r["round"] for r in done}):
            sel = [r for r in done if r["round"] == rnd]
            ax.scatter(
                [r["bracket"] for r in sel], [r["score"] for r in sel], s=18, label=f"round {rnd}"
            )
        ax.set_xlabel("bracket")
        ax.set_ylabel(objective["name"])
        ax.set_title(f"{objective['name']} by Hyperband bracket")
        ax.legend()
        ax.grid(alpha=0.3)
