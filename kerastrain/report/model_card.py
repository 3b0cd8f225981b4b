"""``MODEL_CARD.md`` beside the artifacts: what the model is for, what it was
trained on, how it scores per class, where it is weak, and how to load each
artifact."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.errors import ExportError
from kerastrain.files import atomic_write
from kerastrain.report.formatting import disk_size, format_value, human_size
from kerastrain.report.section import METRIC_COLUMNS
from kerastrain.report.signature import InputSpec, Signature, read_signature

logger = logging.getLogger(__name__)

__all__ = ["write_model_card", "rest_request", "MODEL_CARD_NAME"]

MODEL_CARD_NAME = "MODEL_CARD.md"


def _shape_text(spec: InputSpec) -> str:
    dims = ", ".join(["rows", *(str(d) if d is not None else "any" for d in spec.shape)])
    return f"({dims},)" if not spec.shape else f"({dims})"


def _placeholder(spec: InputSpec) -> str:
    """One row of an input, in the dtype the caller gives (real values for
    a quantized input: the block quantizes them)."""
    shape = (1, *(d if d is not None else 1 for d in spec.shape))
    if spec.dtype == "string":
        return f'np.full({shape}, "")'
    dtype = "float32" if spec.quantization else spec.dtype
    return f"np.zeros({shape}, np.{dtype})"


def _inputs_code(signature: Signature) -> list[str]:
    """``x = ...``: one placeholder row of every input, by name, with its dtype."""
    lines = ["# One row of every input (several rows: longer arrays): put your values here."]
    if not signature.by_name and len(signature.inputs) == 1:
        (spec,) = signature.inputs
        return [*lines, f"x = {_placeholder(spec)}  # {json.dumps(spec.name)}: {_describe(spec)}"]
    opening, closing = ("x = {", "}") if signature.by_name else ("x = [", "]")
    lines.append(opening)
    for spec in signature.inputs:
        key = f"{json.dumps(spec.name)}: " if signature.by_name else ""
        lines.append(f"    {key}{_placeholder(spec)},  # {_describe(spec)}")
    return [*lines, closing]


def _describe(spec: InputSpec) -> str:
    kind = "text" if spec.dtype == "string" else spec.dtype
    if spec.quantization:
        kind = f"{spec.dtype} in the file; give real values as float32"
    return f"{kind}, shape {_shape_text(spec)}"


def _savedmodel_code(path: str, signature: Signature) -> list[str]:
    (output, *_) = signature.outputs
    return [
        "import numpy as np",
        "import tensorflow as tf",
        "",
        f'serve = tf.saved_model.load("{path}").signatures["serving_default"]',
        *_inputs_code(signature),
        "outputs = serve(**{name: tf.constant(value) for name, value in x.items()})"
        f'["{output}"].numpy()',
    ]


def _keras_code(path: str, signature: Signature) -> list[str]:
    registers = [f"import {m}  # registers the model's custom layers" for m in signature.modules]
    return [
        "import numpy as np",
        "import tf_keras",
        "",
        *([*registers, ""] if registers else []),
        f'model = tf_keras.models.load_model("{path}", compile=False)',
        *_inputs_code(signature),
        "outputs = model.predict(x, verbose=0)",
    ]


def _tflite_code(path: str, signature: Signature) -> list[str]:
    (output, *_) = signature.outputs
    lines = [
        "import numpy as np",
        "from ai_edge_litert.interpreter import Interpreter",
        "",
        f'runner = Interpreter(model_path="{path}").get_signature_runner("serving_default")',
        *_inputs_code(signature),
    ]
    for spec in signature.inputs:
        if spec.quantization:
            lines += [
                f'scale, zero = runner.get_input_details()["{spec.name}"]["quantization"]',
                f'real = np.round(x["{spec.name}"] / scale + zero)',
                f"limits = np.iinfo(np.{spec.dtype})",
                f'x["{spec.name}"] = np.clip(real, limits.min, limits.max).astype(np.{spec.dtype})',
            ]
    lines.append(f'outputs = runner(**x)["{output}"]')
    if signature.output_quantization:
        lines += [
            f'scale, zero = runner.get_output_details()["{output}"]["quantization"]',
            "outputs = (outputs.astype(np.float32) - zero) * scale",
        ]
    return lines


def _onnx_code(path: str, signature: Signature) -> list[str]:
    return [
        "import numpy as np",
        "import onnxruntime",
        "",
        f'session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])',
        *_inputs_code(signature),
        "outputs = session.run(None, x)[0]",
    ]


_CODE = {
    "savedmodel": _savedmodel_code,
    "keras": _keras_code,
    "tflite": _tflite_code,
    "onnx": _onnx_code,
}

#: Values in an example REST request body longer than this are built in Python instead.
_REST_LITERAL_VALUES = 1024


def _example_value(spec: InputSpec) -> Any:
    """One row of an input as JSON: zeros (`""` for text) in its shape."""
    value: Any = "" if spec.dtype == "string" else 0 if "int" in spec.dtype else 0.0
    for size in reversed(spec.shape):
        value = [value] * (size or 1)
    return value


def rest_request(signature: Signature) -> dict[str, Any]:
    """An example TensorFlow Serving REST request body for a SavedModel
    signature: one row, by input name in the columnar ``"inputs"`` form
    when it takes several inputs (a table's raw columns), else as
    ``"instances"`` (one entry per row).

    Args:
        signature: The SavedModel's signature (`read_signature`).

    Returns:
        The body, ready for `json.dumps`.
    """
    body: dict[str, Any] = {"signature_name": "serving_default"}
    if len(signature.inputs) == 1:
        body["instances"] = [_example_value(signature.inputs[0])]
    else:
        body["inputs"] = {spec.name: [_example_value(spec)] for spec in signature.inputs}
    return body


def _rest_lines(rel: str, signature: Signature) -> list[str]:
    """The REST request body for the signature, and for a SavedModel under
    a version folder (`export.serving_version`) how to serve it."""
    body = rest_request(signature)
    values = int(
        sum(np.prod([d or 1 for d in spec.shape], dtype=np.int64) for spec in signature.inputs)
    )
    lines = [
        "TensorFlow Serving REST request body for this signature (one row; "
        "`POST /v1/models/<name>:predict`; the answer's `predictions` or `outputs` hold "
        f"`{signature.outputs[0]}`):",
        "",
    ]
    if values <= _REST_LITERAL_VALUES:
        lines += ["```json", json.dumps(body), "```"]
    else:
        (spec,) = signature.inputs
        shape = (1, *(d or 1 for d in spec.shape))
        lines += [
            "```python",
            "import json",
            "import numpy as np",
            "",
            f'body = json.dumps({{"signature_name": "serving_default", "instances": '
            f"np.zeros({shape}, np.{spec.dtype}).tolist()}})",
            "```",
        ]
    parts = Path(rel).parts
    if len(parts) > 1 and parts[-1].isdigit():
        base = Path(*parts[:-1]).as_posix()
        lines += [
            "",
            f"Served as version {parts[-1]} (save the body above as `request.json`):",
            "",
            "```sh",
            f'docker run -p 8501:8501 -v "$PWD/{base}:/models/model" -e MODEL_NAME=model '
            "tensorflow/serving",
            "curl -d @request.json http://localhost:8501/v1/models/model:predict",
            "```",
        ]
    return lines


#: When a file's signature cannot be read: how to load it and see what it takes.
_UNREAD = {
    "savedmodel": [
        "import tensorflow as tf",
        "",
        'serve = tf.saved_model.load("{path}").signatures["serving_default"]',
        "print(serve.structured_input_signature)  # the inputs it takes",
    ],
    "keras": [
        "import tf_keras",
        "",
        'model = tf_keras.models.load_model("{path}", compile=False)',
        "print(model.inputs)  # the inputs it takes",
    ],
    "tflite": [
        "from ai_edge_litert.interpreter import Interpreter",
        "",
        'runner = Interpreter(model_path="{path}").get_signature_runner("serving_default")',
        "print(runner.get_input_details())  # the inputs it takes",
    ],
    "onnx": [
        "import onnxruntime",
        "",
        'session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])',
        "print(session.get_inputs())  # the inputs it takes",
    ],
}


def _format(path: Path) -> str:
    if path.is_dir():
        return "savedmodel"
    return {".tflite": "tflite", ".onnx": "onnx"}.get(path.suffix, "keras")


def _loading_code(path: Path, rel: str) -> tuple[Signature | None, list[str]]:
    """The artifact's signature (`None` when it cannot be read) and the
    Markdown with the code that loads it (at ``rel``, its path from the run
    folder) and runs it on one row, generated from that signature."""
    try:
        signature = read_signature(path)
    except ExportError as exc:
        logger.warning("The model card cannot show the inputs of %s: %s", rel, exc)
        code = [line.format(path=rel) for line in _UNREAD[_format(path)]]
        return None, ["```python", *code, "```", f"(Its input signature could not be read: {exc})"]
    lines = ["```python", *_CODE[signature.format](rel, signature), "```"]
    if signature.format == "savedmodel":
        lines.append(
            f'Keras 3 users: `keras.layers.TFSMLayer("{rel}", call_endpoint="serving_default")`.'
        )
        lines += ["", *_rest_lines(rel, signature)]
    return signature, lines


def _relative(path: Path, run_dir: Path) -> str:
    """The artifact's path from the run folder (``savedmodel/1`` under a
    serving version), or its name when it lies elsewhere."""
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path.name


def _scoring(rel: str, signature: Signature | None) -> list[str]:
    """How to score the artifacts on labelled rows."""
    lines = [
        "Paths are relative to this folder. Each block above builds `x`: one row of every "
        "input the file takes, by name, in the dtype it takes (text as strings), filled with "
        "placeholders; put your raw rows there (kerastrain's preprocessing is inside the model).",
        "",
    ]
    if signature is not None and (
        len(signature.inputs) > 1 or signature.inputs[0].dtype == "string"
    ):
        # `kerastrain.evaluate` reads features as one array: a table's named
        # columns are scored by comparing `outputs` with the labels.
        return lines + [
            "To score them on labelled rows, run a block on those rows and compare `outputs` "
            "with the labels (`kerastrain.evaluate` takes one array of features, not a "
            "table's named columns).",
            "",
        ]
    return lines + [
        "Any of them, scored on new labelled data (`x` as above, `y` their labels):",
        "",
        "```python",
        "import kerastrain",
        "",
        f'metrics = kerastrain.evaluate("{rel}", (x, y))',
        "```",
        "",
    ]


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


def threshold_lines(threshold: Mapping[str, Any] | None) -> list[str]:
    """The model card's "Decision threshold" paragraph (none without one)."""
    if not threshold:
        return []
    how = (
        f"chosen on the {threshold['chosen_on']} split to maximize {threshold['rule']}"
        if threshold.get("chosen_on")
        else "given in evaluate.threshold"
    )
    return [
        "### Decision threshold",
        "",
        f"Predict the positive class when its probability is at least "
        f"**{threshold['value']:.4g}** ({how}); the model outputs the probability, so apply "
        "this cut to its output. The rows `val_at_threshold` and `test_at_threshold` above score "
        "that cut; `val` and `test` score 0.5.",
        "",
    ]


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
    decision_threshold: Mapping[str, Any] | None = None,
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
        decision_threshold: A binary model's decision threshold (`value`,
            `rule`, `chosen_on`). Defaults to `None` (0.5, not stated).

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
    lines += threshold_lines(decision_threshold)
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
    signatures = []
    for fmt, path in artifacts.items():
        rel = _relative(Path(path), run_dir)
        signature, code = _loading_code(Path(path), rel)
        signatures.append(signature)
        lines += [f"### {fmt} (`{rel}`, {human_size(disk_size(Path(path)))})", "", *code, ""]
    if artifacts:
        first = Path(next(iter(artifacts.values())))
        lines += _scoring(_relative(first, run_dir), signatures[0])
    return atomic_write(run_dir / MODEL_CARD_NAME, "\n".join(lines))
