"""Checking a model file a user hands in before anything of it runs.

Trust model
-----------
A saved tf_keras model is not only numbers. A ``Lambda`` layer stores the
Python bytecode of its function, and ``tf_keras.models.load_model`` runs it;
a ``TFOpLambda`` layer names any TensorFlow function (``io.write_file``
too); a layer's ``module`` makes the loader import that module. Keras's
``safe_mode`` guards ``.keras`` files only, not ``.h5`` files or SavedModel
folders. So kerastrain reads every model file it is given (the path given to
`kerastrain.evaluate`, a ``model_options.backbone`` path) as data first:
the model's config (an ``.h5`` file's ``model_config`` attribute, a
``.keras`` archive's ``config.json``, a SavedModel's ``keras_metadata.pb``)
is parsed as JSON and the file is refused when it holds a layer that would
run Python (`Lambda`), a `TFOpLambda` outside TensorFlow's math, or a class
from a module outside Keras; a SavedModel's graph is refused when it holds
an operation that reads or writes files or calls back into Python. Only
then is the file loaded (``.keras`` files in Keras's safe mode, SavedModel
folders given to `evaluate` through ``tf.saved_model.load`` and their
signature, never through Keras's Python revival).

A file you wrote yourself, or one from someone you trust, is loaded as it is
with ``trust_model_file=True`` (a keyword of `kerastrain.evaluate`,
``model_options.trust_model_file: true`` for a backbone, ``--trust`` on the
command line). Other inputs are trusted by design: a YAML config is read
with ``yaml.safe_load`` (no Python tags), but ``tune.build: "module:function"``
and a ``model`` given as a callable import and run the code they name, as a
Python script would. A ``.tflite`` file runs in the TFLite interpreter and
holds no Python.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from kerastrain._keras import tf
from kerastrain.errors import ConfigError, ExportError, message

logger = logging.getLogger(__name__)

__all__ = [
    "check_model_file",
    "model_file_kind",
    "unsafe_parts",
    "savedmodel_unsafe_ops",
    "TRUST_OPTION",
]

#: How a user trusts a model file, for the messages.
TRUST_OPTION = (
    "trust_model_file=True (kerastrain.evaluate), model_options.trust_model_file: true "
    "(a backbone), or --trust on the command line"
)

#: Namespaces of TensorFlow functions a `TFOpLambda` layer may name: pure math
#: on tensors (`__operators__` holds `+`, `*`, `[]`, ...).
_SAFE_TF_NAMESPACES = frozenset(
    {"__operators__", "math", "nn", "linalg", "signal", "image", "bitwise", "sparse", "strings"}
)
#: Top-level TensorFlow functions that leave the tensors: Python, printing, files.
_UNSAFE_TF_FUNCTIONS = frozenset(
    {
        "py_function",
        "numpy_function",
        "print",
        "function",
        "load_op_library",
        "load_library",
        "Module",
        "Variable",
    }
)
#: Graph operations a SavedModel given to kerastrain may not hold: they touch
#: files, call back into Python, or write summaries.
_UNSAFE_OPS = frozenset(
    {
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "Save",
        "SaveV2",
        "SaveSlices",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "ImmutableConst",
        "WholeFileReader",
        "WholeFileReaderV2",
        "TextLineReader",
        "TextLineReaderV2",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "TextLineDataset",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "DatasetToTFRecord",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
        "CreateSummaryFileWriter",
        "WriteSummary",
        "WriteScalarSummary",
        "WriteHistogramSummary",
        "WriteImageSummary",
        "WriteAudioSummary",
        "WriteGraphSummary",
        "WriteRawProtoSummary",
        "ImportEvent",
    }
)


def _keras_module(module: str) -> bool:
    """Keras's own modules, and kerastrain's (its table layers live in
    `kerastrain.data.layers`; importing kerastrain runs only code the user
    already runs)."""
    root = module.split(".", 1)[0]
    return root in ("keras", "tf_keras", "builtins", "kerastrain")


def unsafe_parts(config: Any) -> list[str]:
    """What in a Keras model config would run code when the model is loaded.

    Args:
        config: The model's config, as parsed from JSON.

    Returns:
        One description per unsafe part (a `Lambda` layer, a `TFOpLambda`
        naming a function outside TensorFlow's math, a class or function
        from a module outside Keras); empty when there is none.

    Example:
        >>> unsafe_parts({"class_name": "Lambda", "config": {"name": "f"}})
        ["Lambda layer 'f' (its Python function would run)"]
    """
    found: list[str] = []
    for node in _dicts(config):
        kind = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = inner.get("name", "?")
        if kind == "Lambda" or kind == "__lambda__":
            found.append(f"Lambda layer {name!r} (its Python function would run)")
        elif kind == "TFOpLambda":
            function = str(inner.get("function", ""))
            head, _, rest = function.partition(".")
            safe = (
                head in _SAFE_TF_NAMESPACES and rest != ""
                if "." in function
                else function not in _UNSAFE_TF_FUNCTIONS and function != ""
            )
            if not safe:
                found.append(f"TFOpLambda layer {name!r} calling tf.{function}")
        module = node.get("module")
        if isinstance(module, str) and module and not _keras_module(module):
            found.append(f"{kind or 'an object'} from the module {module!r} (it would be imported)")
    return found


def _dicts(value: Any) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def model_file_kind(path: Path) -> str:
    """``"savedmodel"``, ``"h5"``, ``"keras"``, ``"tflite"`` or ``"onnx"``, from the path.

    Raises:
        ExportError: For a folder without ``saved_model.pb``, another suffix,
            or nothing at a path without a suffix.
    """
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise ExportError(
                message(
                    f"The folder {str(path)!r} is not a SavedModel: it has no saved_model.pb",
                    allowed="Give a SavedModel folder (as tf.saved_model.save or model.save "
                    "writes it), or a .keras, .h5 or .tflite file",
                )
            )
        return "savedmodel"
    kinds = {".h5": "h5", ".hdf5": "h5", ".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    if path.suffix.lower() not in kinds:
        if not path.exists() and not path.suffix:
            raise _missing(path)
        raise ExportError(
            message(
                "Unknown artifact type",
                received={"path": str(path)},
                allowed="Give a SavedModel folder or a .tflite, .onnx, .keras or .h5 file",
            )
        )
    return kinds[path.suffix.lower()]


def _missing(path: Path) -> ExportError:
    return ExportError(
        message(
            f"No model file or folder at {str(path)!r}",
            allowed="Give the path of a SavedModel folder or a .tflite, .onnx, .keras or .h5 file",
        )
    )


def _unreadable(path: Path, kind: str, why: str) -> ExportError:
    return ExportError(
        message(
            f"The {kind} file {str(path)!r} cannot be read as a model ({why}); it may be "
            "truncated, still being written, or not a model file",
            allowed="Give a complete model file saved by tf_keras",
        )
    )


def _h5_config(path: Path) -> Any:
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise _unreadable(path, ".h5", f"not a readable HDF5 file: {exc}") from None
    if raw is None:
        raise ExportError(
            message(
                f"The .h5 file {str(path)!r} holds no model config (a weights-only file, "
                "as save_weights writes it)",
                allowed="Give a whole model saved with model.save(...), or build the model "
                "and call load_weights on it",
            )
        )
    return _json(path, raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def _keras_config(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("config.json").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise _unreadable(path, ".keras", f"not a Keras archive: {exc}") from None
    return _json(path, raw)


def _json(path: Path, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _unreadable(path, "model", f"its config is not JSON: {exc}") from None


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """The fields of a protocol buffer message: (number, wire type, value);
    varints as ints, length-delimited fields as bytes."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            if i >= len(data):
                raise ValueError("truncated varint")
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            i += 8
            yield number, wire, None
        elif wire == 2:
            size = varint()
            if i + size > len(data):
                raise ValueError("truncated field")
            yield number, wire, data[i : i + size]
            i += size
        elif wire == 5:
            i += 4
            yield number, wire, None
        else:
            raise ValueError(f"wire type {wire}")


def _keras_metadata_configs(path: Path) -> list[Any]:
    """The layer configs of a Keras SavedModel's ``keras_metadata.pb``
    (``SavedMetadata.nodes[*].metadata``, each a JSON string)."""
    file = path / "keras_metadata.pb"
    if not file.is_file():
        return []
    configs = []
    try:
        for number, wire, node in _fields(file.read_bytes()):
            if number != 1 or wire != 2:
                continue
            for field, kind, value in _fields(node):
                if field == 5 and kind == 2:
                    configs.append(json.loads(value.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(path, "SavedModel", f"keras_metadata.pb is damaged: {exc}") from None
    return configs


def savedmodel_unsafe_ops(path: Path) -> list[str]:
    """The operations of a SavedModel's graph that touch files or run Python.

    Every function the SavedModel's object graph can call (its signatures,
    its `tf.function`s, the initializers run while loading) is read, with the
    functions they call in turn; the checkpoint save and restore functions,
    which loading does not run, are not.

    Args:
        path: The SavedModel folder.

    Returns:
        ``"op (in function)"`` for each unsafe operation; empty when none.

    Raises:
        ExportError: When ``saved_model.pb`` cannot be parsed.
    """
    try:
        metas = [v for n, w, v in _fields((path / "saved_model.pb").read_bytes()) if n == 2]
        graphs = [tf.compat.v1.MetaGraphDef.FromString(v) for v in metas]
    except Exception as exc:  # a damaged protocol buffer raises DecodeError or ValueError
        raise _unreadable(path, "SavedModel", f"saved_model.pb is damaged: {exc}") from None
    if not graphs:
        raise _unreadable(path, "SavedModel", "saved_model.pb holds no graph")
    found = []
    for graph in graphs:
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        roots = set(graph.object_graph_def.concrete_functions)
        for node in graph.graph_def.node:  # a TF1 graph: every node runs
            if node.op in _UNSAFE_OPS:
                found.append(f"{node.op} (in the graph)")
        for sig in graph.signature_def.values():
            roots.update(t.name.split(":")[0] for t in sig.outputs.values())
        seen: set[str] = set()
        todo = [name for name in roots if name in library]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for node in library[name].node_def:
                if node.op in _UNSAFE_OPS:
                    found.append(f"{node.op} (in {name})")
                callees = [node.op]
                for attr in node.attr.values():
                    if attr.HasField("func"):
                        callees.append(attr.func.name)
                    callees.extend(f.name for f in attr.list.func)
                todo.extend(c for c in callees if c in library and c not in seen)
    return found


def check_model_file(
    path: str | os.PathLike, *, trust: bool, what: str, keras_savedmodel: bool = True
) -> str:
    """Checks a model file a user gave before anything of it is loaded.

    Args:
        path: A SavedModel folder, or a ``.h5``, ``.keras`` or ``.tflite`` file.
        trust: Whether the user trusts the file (see the module's "Trust
            model"): the unsafe-content check is skipped, the file's form is
            still checked.
        what: The option or argument it was given as, for the messages.
        keras_savedmodel: Whether a SavedModel folder is to be loaded by
            Keras (which rebuilds its layers from their configs, Lambda
            bytecode too), not only as a TensorFlow graph. Defaults to `True`.

    Returns:
        Its kind (see `model_file_kind`).

    Raises:
        ExportError: When the path is missing or is not a readable model.
        ConfigError: When the file would run code and ``trust`` is False.
    """
    path = Path(path)
    kind = model_file_kind(path)
    if not path.exists():
        raise _missing(path)
    if kind in ("tflite", "onnx"):
        return kind  # no Python in a flatbuffer or an ONNX graph; the runtime checks the rest
    if kind == "h5":
        unsafe = unsafe_parts(_h5_config(path))
    elif kind == "keras":
        unsafe = unsafe_parts(_keras_config(path))
    else:
        configs = _keras_metadata_configs(path) if keras_savedmodel else []
        unsafe = [p for c in configs for p in unsafe_parts(c)]
        if not trust:
            unsafe += savedmodel_unsafe_ops(path)
    if unsafe and not trust:
        shown = "; ".join(sorted(set(unsafe))[:5])
        raise ConfigError(
            message(
                f"The model file {str(path)!r} was not loaded: loading it would run code it "
                f"carries ({shown}). A saved model can hold Python bytecode and file "
                "operations, which run with your permissions",
                received={what: str(path)},
                allowed=f"If you wrote the file or trust its source, pass {TRUST_OPTION}",
            )
        )
    if unsafe:
        logger.warning("Loading the trusted model file %s, which runs code: %s", path, unsafe)
    return kind
