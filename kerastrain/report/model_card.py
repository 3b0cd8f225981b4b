"""``MODEL_CARD.md`` beside the artifacts: what the model is for, what it was
trained on, how it scores per class, where it is weak, and how to load each
artifact."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.files import atomic_write
from kerastrain.report.formatting import disk_size, format_value, human_size
from kerastrain.report.section import METRIC_COLUMNS

__all__ = ["write_model_card", "MODEL_CARD_NAME"]

MODEL_CARD_NAME = "MODEL_CARD.md"

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
        "| " + " | ".join(format_value(row.get(c)).replace("|", "\\|") for c in columns) + " |"
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
        f"{format_value(summary.get('example shape'))})"
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
            else format_value(value)
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
            f"### {fmt} (`{rel}`, {human_size(disk_size(Path(path)))})",
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
    return atomic_write(run_dir / MODEL_CARD_NAME, "\n".join(lines))
