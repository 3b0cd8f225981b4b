"""``report.html``: one self-contained page, built from its parts.

The page embeds every image (base64 PNG) and needs no network, so it opens
offline and can be mailed as one file; the same PNGs are written beside it. A
section appears only when its stage ran and produced something: there is no
empty "Tuning" heading in a run that did not tune. Stages built elsewhere
(tuning, compression, ensembles) pass their own `Section`\\ s.

This module only draws and writes what it is given: plain mappings, arrays,
and objects with a few documented attributes. It computes no metric.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.files import atomic_path, atomic_write
from kerastrain.report.formatting import disk_size, format_value, human_size
from kerastrain.report.model_card import write_model_card
from kerastrain.report.plots import (
    plot_class_balance,
    plot_confusion,
    plot_history,
    plot_reliability,
    plot_residuals,
    plot_roc_pr,
)
from kerastrain.report.section import METRIC_COLUMNS, Section

logger = logging.getLogger(__name__)

__all__ = ["ReportInputs", "write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
#: The few metrics quoted beside each artifact's size.
ARTIFACT_COLUMNS = (
    "accuracy",
    "f1",
    "roc_auc",
    "log_loss",
    "mae",
    "rmse",
    "r2",
    "max_abs_diff",
    "agreement",
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;
background:#f5f7fa;line-height:1.45}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0;font-size:1.5em}
header p{margin:4px 0 0;opacity:.85}nav{padding:8px 32px;background:#e8edf3;font-size:.9em}
nav a{margin-right:14px;color:#1f3b57}main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border-radius:6px;padding:12px 20px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{font-size:1.15em;margin:6px 0 10px;color:#1f3b57}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}th,td{padding:4px 10px;
border-bottom:1px solid #e3e7ec;text-align:right}th{background:#f0f3f7}td:first-child,
th:first-child{text-align:left}tr:nth-child(even) td{background:#fafbfc}
figure{margin:10px 0}img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#566}
pre{background:#f0f3f7;padding:10px;overflow:auto;font-size:.85em}.scroll{overflow-x:auto}
.finding{border-left:4px solid #888;padding:6px 12px;margin:8px 0;background:#fafbfc}
.finding.overfitting,.finding.underfitting{border-color:#c0392b}
.finding.still_improving,.finding.too_short{border-color:#e0a800}
.finding.good_fit{border-color:#27ae60}.suggestion{color:#334;font-style:italic}
"""


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(format_value(row.get(c)))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table></div>"
    )


def _paragraphs(text: str) -> str:
    return "".join(
        f"<p>{html.escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()
    )


def _figure(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption or Path(path).stem.replace("_", " "))
    cap = (
        f"<figcaption>{html.escape(caption)} ({html.escape(Path(path).name)})</figcaption>"
        if caption
        else f"<figcaption>{html.escape(Path(path).name)}</figcaption>"
    )
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>'


def _config_text(config: Any) -> str:
    import yaml

    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if isinstance(config, Mapping):
        return yaml.safe_dump(_plain(config), sort_keys=False)
    return str(config)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass
class _Part:
    slug: str
    title: str
    body: str


def _class_names(evaluation: Any) -> list[str]:
    task = evaluation.task
    return list(task.class_names) if task.class_names else [str(i) for i in range(task.num_classes)]


def _data_part(summary: Mapping[str, Any], run_dir: Path) -> _Part:
    facts = [{"fact": k, "value": v} for k, v in summary.items() if k not in ("classes", "splits")]
    body = _table(facts)
    splits = summary.get("splits")
    if isinstance(splits, Mapping):
        total = sum(splits.values()) or 1
        body += "<h3>Splits</h3>" + _table(
            [{"split": k, "rows": v, "share": f"{v / total:.0%}"} for k, v in splits.items()]
        )
    classes = summary.get("classes")
    if isinstance(classes, Mapping) and classes:
        counts = np.asarray(list(classes.values()), dtype=float)
        ratio = counts.max() / max(counts.min(), 1)
        body += (
            f"<h3>Class balance</h3><p>{len(classes)} classes; the largest has "
            f"{ratio:.1f}× the rows of the smallest.</p>"
        )
        body += _figure(
            plot_class_balance(classes, run_dir / "class_balance.png"), "rows per class"
        )
    return _Part("data", "Data", body)


def _metrics_part(metrics: Mapping[str, Mapping[str, Any]]) -> _Part | None:
    shown = [c for c in METRIC_COLUMNS if any(c in m for m in metrics.values())]
    if not shown:
        return None
    rows = [
        {"split / artifact": where, **{c: values.get(c) for c in shown}}
        for where, values in metrics.items()
        if values
    ]
    text = (
        "<p>The Keras model on the validation and test splits, and each exported artifact "
        "reloaded and run on the held-out rows. <code>max_abs_diff</code> is the largest "
        "difference from the Keras model's outputs; <code>agreement</code> the share of rows "
        "whose predicted class matches it.</p>"
    )
    return _Part("metrics", "Metrics", text + _table(rows))


def _artifacts_part(
    artifacts: Mapping[str, Path], metrics: Mapping[str, Mapping[str, Any]], reference: str | None
) -> _Part:
    rows = []
    ref = metrics.get(reference or "", {})
    if ref:
        rows.append(
            {
                "artifact": f"Keras model ({reference})",
                "file": "(in memory)",
                "size": "",
                **{c: ref.get(c) for c in ARTIFACT_COLUMNS if c in ref},
            }
        )
    for fmt, path in artifacts.items():
        values = metrics.get(fmt, {})
        path = Path(path)
        rows.append(
            {
                "artifact": fmt,
                # a SavedModel under a serving version is savedmodel/1, not 1
                "file": f"{path.parent.name}/{path.name}" if path.name.isdigit() else path.name,
                "size": human_size(disk_size(path)),
                **{c: values.get(c) for c in ARTIFACT_COLUMNS if c in values},
            }
        )
    return _Part("artifacts", "Artifacts", _table(rows))


def _diagnosis_part(findings: Sequence[Any]) -> _Part:
    items = "".join(
        f'<div class="finding {html.escape(f.kind)}"><p>{html.escape(f.observation)}</p>'
        f'<p class="suggestion">Suggestion: {html.escape(f.suggestion)}</p></div>'
        for f in findings
    )
    return _Part("diagnosis", "Diagnosis", items)


def _evaluation_parts(evaluation: Any, run_dir: Path) -> list[_Part]:
    parts: list[_Part] = []
    metrics, curves, task = evaluation.metrics, evaluation.curves, evaluation.task
    where = f"<p>On the {html.escape(evaluation.split)} split ({len(evaluation.y_true)} rows).</p>"
    if task.kind == "regression":
        if len(evaluation.y_true):
            png = plot_residuals(
                np.asarray(curves["predicted"]),
                np.asarray(curves["residual"]),
                run_dir / "residuals.png",
            )
            parts.append(_Part("residuals", "Residuals", where + _figure(png, "residuals")))
        return parts
    names = _class_names(evaluation)
    if metrics.get("per_class"):
        rows = [{"class": name, **values} for name, values in metrics["per_class"].items()]
        parts.append(_Part("per-class", "Metrics by class", where + _table(rows)))
    if "confusion_matrix" in metrics:
        png = plot_confusion(
            np.asarray(metrics["confusion_matrix"]),
            np.asarray(metrics["confusion_matrix_normalized"]),
            names,
            run_dir / "confusion_matrix.png",
        )
        parts.append(
            _Part(
                "confusion-matrix",
                "Confusion matrix",
                where + "<p>Rows are the true classes.</p>" + _figure(png, "confusion matrix"),
            )
        )
    if curves.get("roc"):
        png = plot_roc_pr(curves["roc"], curves["pr"], run_dir / "roc_pr.png")
        parts.append(
            _Part(
                "roc-pr",
                "ROC and precision-recall curves",
                where
                + "<p>One-vs-rest, one curve per class"
                + (" (the positive class)" if task.kind == "binary" else "")
                + ".</p>"
                + _figure(png, "ROC and precision-recall curves"),
            )
        )
    if curves.get("reliability") and len(evaluation.y_true):
        bins = curves["reliability"]
        png = plot_reliability(bins, run_dir / "calibration.png")
        parts.append(
            _Part(
                "calibration",
                "Calibration",
                where + f"<p>Expected calibration error {bins['ece']:.4f}: the mean gap "
                f"between the predicted probability ({html.escape(bins['kind'])}) and "
                "how often it came true, over equal-width bins weighted by their rows."
                "</p>" + _figure(png, "reliability diagram"),
            )
        )
    return parts


def _explanations_part(explanations: Sequence[Any], run_dir: Path) -> _Part:
    body = ""
    for explanation in explanations:
        body += f"<h3>{html.escape(explanation.title)}</h3>"
        body += _paragraphs(explanation.describe())
        drawn = getattr(explanation, "html", None)
        if callable(drawn):  # drawn as HTML (token attributions), escaped by the explanation
            body += drawn() + _table(explanation.rows())
            continue
        png = explanation.plot(run_dir / f"explanation_{explanation.method}.png")
        body += _figure(png, explanation.title.lower()) + _table(explanation.rows())
    return _Part("explanations", "Explanations", body)


def _extra_part(section: Section, run_dir: Path) -> _Part:
    body = _paragraphs(section.text) + section.html + _table(section.rows)
    for image in section.images:
        image = Path(image)
        if image.resolve().parent != run_dir.resolve():
            copy = run_dir / f"{section.slug}_{image.name}"
            with atomic_path(copy) as tmp:
                shutil.copyfile(image, tmp)
            image = copy
        body += _figure(image, image.stem.replace("_", " "))
    return _Part(section.slug, section.title, body)


def _page(name: str, parts: Sequence[_Part], subtitle: str) -> str:
    nav = "".join(f'<a href="#{p.slug}">{html.escape(p.title)}</a>' for p in parts)
    body = "".join(
        f'<section id="{p.slug}" data-section="{p.slug}"><h2>{html.escape(p.title)}'
        f"</h2>{p.body}</section>"
        for p in parts
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kerastrain run {html.escape(name)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>kerastrain run <code>{html.escape(name)}</code></h1>"
        f"<p>{html.escape(subtitle)}</p></header><nav>{nav}</nav><main>{body}</main>"
        "</body></html>\n"
    )


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows about one run, as plain values.

    Attributes:
        run_dir: The run folder the report is written to.
        name: The run's name.
        summary: Facts about the data (`Prepared.summary()`): rows, task,
            classes (name to rows), splits (name to rows), ... Defaults to `{}`.
        history: The training history. Defaults to `{}`.
        metrics: `"val"`, `"test"` and one entry per artifact. Defaults to `{}`.
        artifacts: Format name to path. Defaults to `{}`.
        timings: Seconds per pipeline stage. Defaults to `{}`.
        stop_reason: Why training stopped. Defaults to `None` (shown as n/a).
        config: The resolved config (a mapping or an object with `to_dict`).
            Defaults to `None` (no config section).
        evaluation: The held-out evaluation (`task`, `split`, `y_true`,
            `metrics`, `curves`, `diagnosis`, as the evaluate stage's
            `Evaluation` has them). Defaults to `None` (no curves, confusion
            matrix or calibration).
        diagnosis: Findings (`kind`, `observation`, `suggestion`). Defaults
            to `None`: the evaluation's.
        explanations: Objects with `method`, `title`, `describe()`, `rows()`
            and `plot(path)` (the explanation stage's results); one with an
            `html()` method (token attributions) is drawn by the HTML
            fragment it returns instead of a figure. Defaults to `()`.
        sections: Extra sections from other stages (tuning, compression).
            Defaults to `()`.
        model_card: Also write `MODEL_CARD.md`. Defaults to `True`.
        intended_use: The model card's intended use. Defaults to `None`
            (a description generated from the data and task).
        limitations: More limits for the model card. Defaults to `()`.
        decision_threshold: A binary model's chosen decision threshold
            (`value`, `rule`, `chosen_on`), for the model card. Defaults to
            `None` (0.5).
    """

    run_dir: str | os.PathLike
    name: str
    summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    history: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    artifacts: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)
    stop_reason: str | None = None
    config: Any = None
    evaluation: Any = None
    diagnosis: Sequence[Any] | None = None
    explanations: Sequence[Any] = ()
    sections: Sequence[Section] = ()
    model_card: bool = True
    intended_use: str | None = None
    limitations: Sequence[str] = ()
    decision_threshold: Mapping[str, Any] | None = None


def _held_out(inputs: ReportInputs) -> str | None:
    """The split the evaluation scored, else test, else validation."""
    if inputs.evaluation is not None:
        return inputs.evaluation.split
    return next((s for s in ("test", "val") if inputs.metrics.get(s)), None)


def _summary_part(inputs: ReportInputs, held_out: str | None) -> _Part:
    facts = [
        {"item": "run", "value": inputs.name},
        {"item": "task", "value": inputs.summary.get("task")},
        {"item": "training stopped", "value": inputs.stop_reason},
        {"item": "epochs logged", "value": len(inputs.history.get("loss", ()))},
        {"item": "artifacts", "value": ", ".join(inputs.artifacts) or "none"},
    ]
    headline = inputs.metrics.get(held_out or "", {})
    for key in ("accuracy", "f1", "roc_auc", "rmse", "r2"):
        if key in headline:
            facts.append({"item": f"{held_out} {key}", "value": headline[key]})
    return _Part("summary", "Summary", _table(facts))


def _parts(inputs: ReportInputs, run_dir: Path, diagnosis: Sequence[Any] | None) -> list[_Part]:
    """Every part of the page that has something to show, in order, with unique ids."""
    held_out = _held_out(inputs)
    parts = [_summary_part(inputs, held_out)]
    if inputs.config is not None:
        parts.append(
            _Part(
                "config", "Configuration", f"<pre>{html.escape(_config_text(inputs.config))}</pre>"
            )
        )
    if inputs.summary:
        parts.append(_data_part(inputs.summary, run_dir))
    plot = plot_history(inputs.history, run_dir / "learning_curves.png")
    if plot is not None:
        parts.append(_Part("learning-curves", "Learning curves", _figure(plot, "learning curves")))
    if diagnosis:
        parts.append(_diagnosis_part(diagnosis))
    part = _metrics_part(inputs.metrics)
    if part is not None:
        parts.append(part)
    if inputs.artifacts:
        parts.append(_artifacts_part(inputs.artifacts, inputs.metrics, held_out))
    if inputs.evaluation is not None:
        parts += _evaluation_parts(inputs.evaluation, run_dir)
    if inputs.explanations:
        parts.append(_explanations_part(inputs.explanations, run_dir))
    parts += [_extra_part(s, run_dir) for s in inputs.sections]
    if inputs.timings:
        rows = [{"stage": k, "seconds": round(float(v), 2)} for k, v in inputs.timings.items()]
        parts.append(_Part("stages", "Stages", _table(rows)))
    seen: set[str] = set()
    for part in parts:  # ids stay unique whatever titles the extra sections have
        base, i = part.slug, 2
        while part.slug in seen:
            part.slug, i = f"{base}-{i}", i + 1
        seen.add(part.slug)
    return parts


def write_report(inputs: ReportInputs) -> Path:
    """Writes ``report.html``, its PNGs and ``MODEL_CARD.md`` in the run folder.

    Sections, each only when there is something to show: summary, config,
    data (rows, splits, class balance), learning curves (loss, metrics,
    learning rate), diagnosis, metrics (the Keras model and every artifact),
    artifacts (size and metrics side by side), metrics by class, confusion
    matrix, ROC and precision-recall curves, calibration, residuals
    (regression), explanations, the extra `sections` (tuning, compression,
    ...), and the stages' timings.

    Args:
        inputs: What the run produced (see `ReportInputs`).

    Returns:
        The path of ``report.html``.

    Example:
        >>> inputs = ReportInputs(run_dir, name="run", history={"loss": [0.9, 0.4]})
        >>> write_report(inputs)  # doctest: +SKIP
    """
    run_dir = Path(inputs.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    diagnosis = inputs.diagnosis
    if diagnosis is None and inputs.evaluation is not None:
        diagnosis = inputs.evaluation.diagnosis
    parts = _parts(inputs, run_dir, diagnosis)
    summary = inputs.summary
    subtitle = f"written {_dt.datetime.now():%Y-%m-%d %H:%M}; {summary.get('data', '')}".strip("; ")
    path = atomic_write(run_dir / REPORT_NAME, _page(inputs.name, parts, subtitle))
    logger.info("Report: %s (%d sections).", path, len(parts))
    if inputs.model_card:
        write_model_card(
            run_dir,
            name=inputs.name,
            summary=summary,
            metrics=inputs.metrics,
            artifacts=inputs.artifacts,
            held_out=_held_out(inputs),
            diagnosis=diagnosis or (),
            intended_use=inputs.intended_use,
            limitations=inputs.limitations,
            decision_threshold=inputs.decision_threshold,
        )
    return path
