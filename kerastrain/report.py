"""The run report: one self-contained HTML page, its PNGs, and a model card.

``report.html`` embeds every image (base64 PNG) and needs no network, so it
opens offline and can be mailed as one file; the same PNGs are written beside
it. A section appears only when its stage ran and produced something: there
is no empty "Tuning" heading in a run that did not tune. Stages built
elsewhere (tuning, compression, ensembles) pass their own `Section`\\ s.

``MODEL_CARD.md`` beside the artifacts says what the model is for, what it
was trained on, how it scores per class, where it is weak, and how to load
each artifact.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "Section",
    "plot_history",
    "write_report",
    "write_model_card",
    "scores_section",
    "REPORT_NAME",
    "MODEL_CARD_NAME",
]

REPORT_NAME = "report.html"
MODEL_CARD_NAME = "MODEL_CARD.md"
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
    "max_abs_diff",
    "agreement",
)
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
LEARNING_RATE_KEYS = ("lr", "learning_rate")
#: Largest class count whose confusion matrix cells get their numbers written.
ANNOTATED_CLASSES = 12
#: Largest class count whose curves get one line each (more: the legend is dropped).
LEGEND_CLASSES = 10


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


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_history(history: Mapping[str, Sequence[float]], path: Path) -> Path | None:
    """Plots the loss, each logged metric against its validation twin, and
    the learning rate when it was logged; returns the PNG (None when empty)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = [
        k
        for k in history
        if not k.startswith("val_") and k not in LEARNING_RATE_KEYS and len(history[k])
    ]
    names.sort(key=lambda k: k != "loss")
    rate = next((k for k in LEARNING_RATE_KEYS if len(history.get(k, ()))), None)
    panels = names + ([rate] if rate else [])
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        values = history[name]
        epochs = range(1, len(values) + 1)
        if name == rate:
            ax.plot(epochs, values, color="tab:green")
            ax.set_title("learning rate")
            if min(values) > 0:
                ax.set_yscale("log")
        else:
            ax.plot(epochs, values, label="train")
            if len(history.get(f"val_{name}", ())):
                ax.plot(
                    range(1, len(history[f"val_{name}"]) + 1),
                    history[f"val_{name}"],
                    label="validation",
                )
            ax.set_title(name)
            ax.legend()
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _plot_class_balance(classes: Mapping[str, int], path: Path) -> Path:
    plt = _pyplot()
    names, counts = list(map(str, classes)), list(classes.values())
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.45 * len(names), 12), 3.0))
    ax.bar(range(len(names)), counts, color="tab:blue")
    ax.set_xticks(
        range(len(names)),
        names,
        rotation=45 if len(names) > 8 else 0,
        ha="right" if len(names) > 8 else "center",
    )
    ax.set_ylabel("rows")
    ax.set_title("Rows per class")
    fig.tight_layout()
    return _save(fig, path)


def _plot_confusion(
    counts: np.ndarray, normalized: np.ndarray, names: Sequence[str], path: Path
) -> Path:
    plt = _pyplot()
    k = len(names)
    size = min(3.0 + 0.35 * k, 9.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, matrix, title, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalized, "share of each true class", ".2f"),
    ):
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if k <= ANNOTATED_CLASSES:
            top = matrix.max() if matrix.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        format(matrix[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if top and matrix[i, j] > top / 2 else "black",
                    )
    fig.tight_layout()
    return _save(fig, path)


def _plot_roc_pr(
    roc: Mapping[str, Mapping[str, Any]], pr: Mapping[str, Mapping[str, Any]], path: Path
) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, curve in roc.items():
        axes[0].plot(curve["fpr"], curve["tpr"], lw=1.2, label=f"{name} (AUC {curve['auc']:.3f})")
    axes[0].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    axes[0].set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    for name, curve in pr.items():
        axes[1].plot(
            curve["recall"], curve["precision"], lw=1.2, label=f"{name} (AP {curve['ap']:.3f})"
        )
    axes[1].set(
        xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02)
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(roc) <= LEGEND_CLASSES:
            ax.legend(fontsize=7, loc="lower right" if ax is axes[0] else "lower left")
    fig.tight_layout()
    return _save(fig, path)


def _plot_reliability(bins: Mapping[str, Any], path: Path) -> Path:
    plt = _pyplot()
    confidence, observed = np.asarray(bins["confidence"]), np.asarray(bins["observed"])
    counts, edges = np.asarray(bins["counts"]), np.asarray(bins["bin_edges"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [3, 2]})
    axes[0].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfectly calibrated")
    axes[0].plot(confidence, observed, marker="o", label="model")
    axes[0].set(
        xlabel=f"predicted probability ({bins['kind']})",
        ylabel="observed frequency",
        title=f"Reliability (ECE {bins['ece']:.3f})",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].bar(confidence, counts, width=float(edges[1] - edges[0]) * 0.9, color="tab:blue")
    axes[1].set(xlabel="predicted probability", ylabel="rows", title="Rows per bin", xlim=(0, 1))
    fig.tight_layout()
    return _save(fig, path)


def _plot_residuals(predicted: np.ndarray, residual: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    axes[0].scatter(predicted, residual, s=8, alpha=0.6)
    axes[0].axhline(0.0, color="grey", lw=0.8, ls="--")
    axes[0].set(xlabel="predicted", ylabel="true - predicted", title="Residuals")
    axes[1].hist(residual, bins=30, color="tab:blue")
    axes[1].set(xlabel="true - predicted", ylabel="rows", title="Residual distribution")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- HTML pieces

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


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "×".join(str(v) for v in value) if value else "()"
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
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


def _size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


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
            _plot_class_balance(classes, run_dir / "class_balance.png"), "rows per class"
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
        rows.append(
            {
                "artifact": fmt,
                "file": Path(path).name,
                "size": _human(_size(Path(path))),
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
            png = _plot_residuals(
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
        png = _plot_confusion(
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
        png = _plot_roc_pr(curves["roc"], curves["pr"], run_dir / "roc_pr.png")
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
        png = _plot_reliability(bins, run_dir / "calibration.png")
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
        png = explanation.plot(run_dir / f"explanation_{explanation.method}.png")
        body += f"<h3>{html.escape(explanation.title)}</h3>"
        body += _paragraphs(explanation.describe())
        body += _figure(png, explanation.title.lower()) + _table(explanation.rows())
    return _Part("explanations", "Explanations", body)


def _extra_part(section: Section, run_dir: Path) -> _Part:
    body = _paragraphs(section.text) + section.html + _table(section.rows)
    for image in section.images:
        image = Path(image)
        if image.resolve().parent != run_dir.resolve():
            copy = run_dir / f"{section.slug}_{image.name}"
            tmp = copy.with_name(f".{copy.name}.tmp")
            shutil.copyfile(image, tmp)
            os.replace(tmp, copy)
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


def write_report(
    run_dir: str | os.PathLike,
    *,
    name: str,
    summary: Mapping[str, Any],
    history: Mapping[str, Sequence[float]],
    metrics: Mapping[str, Mapping[str, Any]],
    artifacts: Mapping[str, Path],
    timings: Mapping[str, float],
    stop_reason: str,
    config: Any = None,
    evaluation: Any = None,
    diagnosis: Sequence[Any] | None = None,
    explanations: Iterable[Any] = (),
    sections: Iterable[Section] = (),
    model_card: bool = True,
    intended_use: str | None = None,
    limitations: Sequence[str] = (),
) -> Path:
    """Writes ``report.html``, its PNGs and ``MODEL_CARD.md`` in the run folder.

    Sections, each only when there is something to show: summary, config,
    data (rows, splits, class balance), learning curves (loss, metrics,
    learning rate), diagnosis, metrics (the Keras model and every artifact),
    artifacts (size and metrics side by side), metrics by class, confusion
    matrix, ROC and precision-recall curves, calibration, residuals
    (regression), explanations, the extra `sections` (tuning, compression,
    ...), and the stages' timings.

    Args:
        run_dir: The run folder.
        name: The run's name.
        summary: Facts about the data (`Prepared.summary()`): rows, task,
            classes (name to rows), splits (name to rows), ...
        history: The training history.
        metrics: `"val"`, `"test"` and one entry per artifact.
        artifacts: Format name to path.
        timings: Seconds per pipeline stage.
        stop_reason: Why training stopped.
        config: The resolved config (a mapping or an object with `to_dict`).
            Defaults to `None` (no config section).
        evaluation: The held-out evaluation (`kerastrain.evaluate.Evaluation`:
            `task`, `split`, `y_true`, `metrics`, `curves`, `diagnosis`).
            Defaults to `None` (no curves, confusion matrix or calibration).
        diagnosis: Findings (`kind`, `observation`, `suggestion`). Defaults
            to `None`: the evaluation's.
        explanations: Objects with `method`, `title`, `describe()`, `rows()`
            and `plot(path)` (`kerastrain.explain`'s results). Defaults to `()`.
        sections: Extra sections from other stages. Defaults to `()`.
        model_card: Also write `MODEL_CARD.md`. Defaults to `True`.
        intended_use: The model card's intended use. Defaults to `None`
            (a description generated from the data and task).
        limitations: More limits for the model card. Defaults to `()`.

    Returns:
        The path of ``report.html``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    explanations, sections = list(explanations), list(sections)
    if diagnosis is None and evaluation is not None:
        diagnosis = evaluation.diagnosis
    held_out = (
        evaluation.split
        if evaluation is not None
        else next((s for s in ("test", "val") if metrics.get(s)), None)
    )

    facts = [
        {"item": "run", "value": name},
        {"item": "task", "value": summary.get("task")},
        {"item": "training stopped", "value": stop_reason},
        {"item": "epochs logged", "value": len(history.get("loss", ()))},
        {"item": "artifacts", "value": ", ".join(artifacts) or "none"},
    ]
    headline = metrics.get(held_out or "", {})
    for key in ("accuracy", "f1", "roc_auc", "rmse", "r2"):
        if key in headline:
            facts.append({"item": f"{held_out} {key}", "value": headline[key]})
    parts = [_Part("summary", "Summary", _table(facts))]
    if config is not None:
        parts.append(
            _Part("config", "Configuration", f"<pre>{html.escape(_config_text(config))}</pre>")
        )
    if summary:
        parts.append(_data_part(summary, run_dir))
    plot = plot_history(history, run_dir / "learning_curves.png")
    if plot is not None:
        parts.append(_Part("learning-curves", "Learning curves", _figure(plot, "learning curves")))
    if diagnosis:
        parts.append(_diagnosis_part(diagnosis))
    part = _metrics_part(metrics)
    if part is not None:
        parts.append(part)
    if artifacts:
        parts.append(_artifacts_part(artifacts, metrics, held_out))
    if evaluation is not None:
        parts += _evaluation_parts(evaluation, run_dir)
    if explanations:
        parts.append(_explanations_part(explanations, run_dir))
    parts += [_extra_part(s, run_dir) for s in sections]
    if timings:
        parts.append(
            _Part(
                "stages",
                "Stages",
                _table([{"stage": k, "seconds": round(float(v), 2)} for k, v in timings.items()]),
            )
        )
    seen: set[str] = set()
    for part in parts:  # ids stay unique whatever titles the extra sections have
        base, i = part.slug, 2
        while part.slug in seen:
            part.slug, i = f"{base}-{i}", i + 1
        seen.add(part.slug)

    subtitle = f"written {_dt.datetime.now():%Y-%m-%d %H:%M}; {summary.get('data', '')}".strip("; ")
    path = run_dir / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(_page(name, parts, subtitle), encoding="utf-8")
    os.replace(tmp, path)
    logger.info("Report: %s (%d sections).", path, len(parts))
    if model_card:
        write_model_card(
            run_dir,
            name=name,
            summary=summary,
            metrics=metrics,
            artifacts=artifacts,
            held_out=held_out,
            diagnosis=diagnosis or (),
            intended_use=intended_use,
            limitations=limitations,
        )
    return path


# --------------------------------------------------------------------------- model card

_LOADERS = {
    "savedmodel": """\
```python
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load("{path}")
serve = loaded.signatures["serving_default"]
(name,) = serve.structured_input_signature[1]      # the input's name
outputs = next(iter(serve(**{{name: tf.constant(x, tf.float32)}}).values())).numpy()
```
Keras 3 users: `keras.layers.TFSMLayer("{path}", call_endpoint="serving_default")`.""",
    "keras": """\
```python
import tf_keras

model = tf_keras.models.load_model("{path}", compile=False)
outputs = model.predict(x)
```""",
    "h5": """\
```python
import tf_keras

model = tf_keras.models.load_model("{path}", compile=False)
outputs = model.predict(x)
```""",
    "tflite": """\
```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter

runner = Interpreter(model_path="{path}").get_signature_runner("serving_default")
(name,) = runner.get_input_details()               # the input's name
outputs = next(iter(runner(**{{name: x.astype(np.float32)}}).values()))
```""",
}


def _md_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|") for c in columns) + " |"
        for row in rows
    ]
    return lines + [""]


def _limits(
    summary: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, Any]],
    held_out: str | None,
    diagnosis: Sequence[Any],
) -> list[str]:
    limits = []
    scored = metrics.get(held_out or "", {})
    n = scored.get("examples")
    if n:
        limits.append(
            f"Scored on {n} held-out rows of the same source ({summary.get('data', '')})"
            "; rows drawn differently (another population, sensor or time) may score "
            "lower."
        )
        if "accuracy" in scored:
            p = scored["accuracy"]
            half = 1.96 * np.sqrt(max(p * (1 - p), 1e-12) / n)
            limits.append(
                f"With {n} rows, the accuracy {p:.3f} is known to about ±{half:.3f} "
                "(95% normal interval)."
            )
    if "rmse" in scored:
        limits.append(
            f"Typical error on held-out rows: RMSE {scored['rmse']:.4g}, MAE "
            f"{scored['mae']:.4g} (in the target's units); R² {scored['r2']:.3f}."
        )
    per_class = scored.get("per_class") or {}
    if per_class:
        weakest = min(per_class, key=lambda c: per_class[c]["f1"])
        values = per_class[weakest]
        limits.append(
            f"Weakest class: {weakest!r} (F1 {values['f1']:.3f}, recall "
            f"{values['recall']:.3f}, {values['support']} rows)."
        )
    classes = summary.get("classes")
    if isinstance(classes, Mapping) and classes:
        counts = np.asarray(list(classes.values()), float)
        if counts.min() > 0 and counts.max() / counts.min() >= 3:
            limits.append(
                f"Imbalanced classes: the largest has {counts.max() / counts.min():.1f}×"
                " the rows of the smallest; balanced accuracy and per-class recall "
                "matter more than accuracy."
            )
    if scored.get("ece") is not None:
        ece = scored["ece"]
        limits.append(
            f"Calibration: expected calibration error {ece:.3f}; "
            + (
                "the probabilities can be read as frequencies."
                if ece < 0.05
                else "treat the probabilities as scores, not frequencies."
            )
        )
    for finding in diagnosis:
        if finding.kind in ("overfitting", "underfitting", "still_improving"):
            limits.append(finding.observation)
    return limits


def write_model_card(
    run_dir: str | os.PathLike,
    *,
    name: str,
    summary: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, Any]],
    artifacts: Mapping[str, Path],
    held_out: str | None = None,
    diagnosis: Sequence[Any] = (),
    intended_use: str | None = None,
    limitations: Sequence[str] = (),
) -> Path:
    """Writes ``MODEL_CARD.md``: intended use, data, metrics overall and by
    class, limits, and how to load each artifact.

    Args:
        run_dir: The run folder (the artifacts' folder).
        name: The run's name.
        summary: Facts about the data (`Prepared.summary()`).
        metrics: `"val"`, `"test"` and one entry per artifact.
        artifacts: Format name to path.
        held_out: The split whose per-class metrics are shown.
            Defaults to `None` (test, else validation).
        diagnosis: Findings from the learning curves. Defaults to `()`.
        intended_use: What the model is for. Defaults to `None` (generated).
        limitations: More limits, written first. Defaults to `()`.

    Returns:
        The path of ``MODEL_CARD.md``.
    """
    run_dir = Path(run_dir)
    held_out = held_out or next((s for s in ("test", "val") if metrics.get(s)), None)
    task = summary.get("task", "unknown")
    classes = summary.get("classes")
    what = {
        "binary": "binary classifier",
        "multiclass": "multi-class classifier",
        "regression": "regression model",
    }.get(task, "model")
    default_use = (
        f"A {what} trained by kerastrain on {summary.get('data', 'the given data')} "
        f"({summary.get('rows', '?')} rows, each of shape "
        f"{_fmt(summary.get('example shape'))})"
        + (
            f", predicting one of {len(classes)} classes ({', '.join(map(str, classes))})"
            if isinstance(classes, Mapping)
            else ""
        )
        + ". Intended for raw rows measured like the training data (any "
        "standardization kerastrain fitted is inside the model). Not validated for "
        "decisions about people without further review."
    )
    lines = [
        f"# Model card: {name}",
        "",
        "## Intended use",
        "",
        intended_use or default_use,
        "",
        "## Data",
        "",
    ]
    for key, value in summary.items():
        shown = (
            ", ".join(f"{a}: {b}" for a, b in value.items())
            if isinstance(value, Mapping)
            else _fmt(value)
        )
        lines.append(f"- **{key}**: {shown}")
    lines += ["", "## Metrics", ""]
    shown = [c for c in METRIC_COLUMNS if any(c in m for m in metrics.values())]
    lines += _md_table(
        [{"split / artifact": w, **{c: m.get(c) for c in shown}} for w, m in metrics.items() if m]
    ) or ["No metrics were computed.", ""]
    per_class = metrics.get(held_out or "", {}).get("per_class")
    if per_class:
        lines += [f"### By class ({held_out} split)", ""]
        lines += _md_table([{"class": c, **v} for c, v in per_class.items()])
    lines += ["## Limits", ""]
    lines += [
        f"- {text}" for text in [*limitations, *_limits(summary, metrics, held_out, diagnosis)]
    ] or ["- None recorded."]
    lines += ["", "## How to load", ""]
    if not artifacts:
        lines += ["No artifact was exported.", ""]
    for fmt, path in artifacts.items():
        rel = Path(path).name
        lines += [
            f"### {fmt} (`{rel}`, {_human(_size(Path(path)))})",
            "",
            _LOADERS.get(fmt, "```python\n# load {path} with the tool that wrote it\n```").format(
                path=rel
            ),
            "",
        ]
    if artifacts:
        any_path = Path(next(iter(artifacts.values()))).name
        lines += [
            "Any of them, scored on new labelled data:",
            "",
            "```python",
            "import kerastrain",
            "",
            f'metrics = kerastrain.evaluate("{any_path}", (x, y))',
            "```",
            "",
            "Paths are relative to this folder; `x` holds raw feature rows as float32.",
            "",
        ]
    path = run_dir / MODEL_CARD_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path
