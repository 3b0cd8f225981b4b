"""``model_info.json``: what an exported model answers and takes, beside its artifacts.

The artifacts themselves say only tensors: a SavedModel does not know that
its one output is the probability of ``"benign"``, nor that its input
``mean_radius`` is the CSV column ``"mean radius"``. The export writes those
facts once, in a small JSON file beside the artifacts, so that any artifact
of the run (whatever its format) can be used on new files by name:

```
{"version": 1, "task": "binary", "num_classes": 2,
 "class_names": ["malignant", "benign"], "target": "diagnosis",
 "inputs": [{"name": "mean_radius", "column": "mean radius",
             "dtype": "float32", "shape": []}, ...],
 "feature_names": null}
```

``inputs`` lists the model's inputs with the shape of one row (``[]`` for a
table's column, ``[30]`` for 30 features, ``[8, 8, 1]`` for an image);
``column`` is the data's column an input reads (tables); ``feature_names``
names the last axis of a single array input when the data had names.
`read_model_info` finds the file beside an artifact, or one folder up (a
SavedModel folder inside a versioned folder). This module imports no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kerastrain.errors import ExportError, message
from kerastrain.files import write_json
from kerastrain.task import Task

__all__ = ["MODEL_INFO", "InputInfo", "ModelInfo", "write_model_info", "read_model_info"]

#: The file's name inside the run folder.
MODEL_INFO = "model_info.json"
#: The layout written; a reader refuses a newer one.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class InputInfo:
    """One model input.

    Attributes:
        name: The input's name (the signature key of every artifact).
        dtype: `"float32"`, `"string"`, ...
        shape: The shape of one row (`()` for a table's column).
        column: The data's column it reads (tables), else None.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    column: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `model_info.json` records.

    Attributes:
        task: The task, with its class names when known.
        inputs: The model's inputs, in order.
        target: The label column the model was trained on, when named.
        feature_names: The names of a single array input's last axis.
        threshold: A binary model's decision threshold (`evaluate.threshold`):
            a row is the positive class when its probability is at least
            this; None cuts at 0.5.
        path: The file it was read from.
    """

    task: Task
    inputs: tuple[InputInfo, ...]
    target: str | None = None
    feature_names: tuple[str, ...] | None = None
    threshold: float | None = None
    path: Path | None = None

    @property
    def is_table(self) -> bool:
        """One input per column (a table model's raw columns)."""
        return any(i.column is not None for i in self.inputs)


def write_model_info(
    run_dir: str | os.PathLike,
    inputs: Sequence[Any],
    task: Task,
    *,
    target: str | None = None,
    columns: dict[str, str] | None = None,
    feature_names: Sequence[str] | None = None,
    threshold: float | None = None,
) -> Path:
    """Writes ``model_info.json`` into ``run_dir`` (atomically).

    Args:
        run_dir: The folder the artifacts are in.
        inputs: The model's input tensors (`model.inputs`: `.name`, `.dtype`,
            `.shape`).
        task: The task the model answers.
        target: The label column. Defaults to `None`.
        columns: A table's input name -> data column. Defaults to `None`.
        feature_names: Names of a single array input's last axis.
            Defaults to `None`.
        threshold: A binary model's chosen decision threshold, which
            `kerastrain predict` and `evaluate` then cut at. Defaults to
            `None` (0.5).

    Returns:
        The file written.
    """
    columns = columns or {}
    described = []
    for tensor in inputs:
        name = str(tensor.name).split(":")[0]
        described.append(
            {
                "name": name,
                "column": columns.get(name),
                "dtype": getattr(tensor.dtype, "name", str(tensor.dtype)),
                "shape": [None if d is None else int(d) for d in list(tensor.shape)[1:]],
            }
        )
    width = described[0]["shape"][-1:] if len(described) == 1 else None
    names = list(feature_names) if feature_names and width == [len(feature_names)] else None
    return write_json(
        Path(run_dir) / MODEL_INFO,
        {
            "version": VERSION,
            "task": task.kind,
            "num_classes": task.num_classes,
            "class_names": list(task.class_names) if task.class_names else None,
            "target": target,
            "inputs": described,
            "feature_names": names,
            "threshold": threshold,
        },
    )


def read_model_info(artifact: str | os.PathLike) -> ModelInfo | None:
    """The `model_info.json` beside an artifact (or one folder up), else None.

    Args:
        artifact: An artifact's path (a file or a SavedModel folder).

    Returns:
        What the file records, or None when there is none.

    Raises:
        ExportError: When the file is there but cannot be read.
    """
    artifact = Path(artifact)
    for folder in (artifact.parent, artifact.parent.parent):
        path = folder / MODEL_INFO
        if path.is_file():
            return _parse(path)
    return None


def _parse(path: Path) -> ModelInfo:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("version", 0) > VERSION:
            raise ValueError(f"version {record['version']} is newer than this kerastrain's")
        names = record.get("class_names")
        task = Task(record["task"], int(record["num_classes"]), tuple(names) if names else None)
        inputs = tuple(
            InputInfo(
                name=str(i["name"]),
                dtype=str(i["dtype"]),
                shape=tuple(i["shape"]),
                column=i.get("column"),
            )
            for i in record["inputs"]
        )
        features = record.get("feature_names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(
            message(
                f"Cannot read {str(path)!r}: {type(exc).__name__}: {exc}",
                allowed="Export the model again with kerastrain (it writes this file beside "
                "the artifacts), or remove the file to use the artifact without it",
            )
        ) from None
    return ModelInfo(
        task=task,
        inputs=inputs,
        target=record.get("target"),
        feature_names=tuple(features) if features else None,
        threshold=record.get("threshold"),
        path=path,
    )
