"""The run report: a Markdown page with the learning curves as PNG."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

__all__ = ["plot_history", "write_report"]

SUMMARY_KEYS = ("accuracy", "f1", "roc_auc", "mae", "rmse", "r2", "max_abs_diff", "agreement")


def plot_history(history: Mapping[str, list[float]], path: Path) -> Path | None:
    """Plots each logged quantity against its validation twin; returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [k for k in history if not k.startswith("val_") and k != "lr" and history[k]]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if history.get(f"val_{name}"):
            ax.plot(range(1, len(history[f"val_{name}"]) + 1), history[f"val_{name}"],
                    label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(title: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A titled Markdown table; columns are the keys of all rows, in order."""
    if not rows:
        return []
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines + [""]


def write_report(run_dir: Path, *, name: str, summary: Mapping[str, Any],
                 history: Mapping[str, list[float]], metrics: Mapping[str, Mapping[str, Any]],
                 artifacts: Mapping[str, Path], timings: Mapping[str, float],
                 stop_reason: str,
                 tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Path:
    """Writes ``report.md`` (and ``learning_curves.png``) in the run folder.

    Args:
        run_dir: The run folder.
        name: The run's name.
        summary: Short facts about the data and model (rows, task, classes,
            splits, parameters).
        history: The training history.
        metrics: `"val"`, `"test"` and one entry per artifact.
        artifacts: Format name to path.
        timings: Seconds per pipeline stage.
        stop_reason: Why training stopped.
        tables: More tables from other stages (title -> rows of column ->
            value), e.g. the compression tables. Defaults to `None`.

    Returns:
        The report's path.
    """
    plot = plot_history(history, run_dir / "learning_curves.png")
    lines = [f"# kerastrain run `{name}`", ""]
    lines += ["## Summary", ""] + [f"- **{k}**: {v}" for k, v in summary.items()]
    lines += [f"- **training stopped**: {stop_reason}", ""]
    columns = [k for k in SUMMARY_KEYS if any(k in m for m in metrics.values())]
    if columns:
        lines += ["## Metrics", "", "| split / artifact | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for where, values in metrics.items():
            lines.append(f"| {where} | " + " | ".join(_fmt(values.get(c)) for c in columns) + " |")
        lines.append("")
    test = metrics.get("test", {})
    if "confusion_matrix" in test:
        lines += ["## Confusion matrix (test; rows are true classes)", "", "```"]
        lines += [" ".join(f"{v:4d}" for v in row) for row in test["confusion_matrix"]]
        lines += ["```", ""]
    for title, rows in (tables or {}).items():
        lines += _table(title, rows)
    if plot is not None:
        lines += ["## Learning curves", "", f"![learning curves]({plot.name})", ""]
    if artifacts:
        lines += ["## Artifacts", ""] + [f"- `{fmt}`: `{Path(p).name}`" for fmt, p in artifacts.items()]
        lines.append("")
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in timings.items()]
    path = run_dir / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
