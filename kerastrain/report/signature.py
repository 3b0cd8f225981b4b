"""What an exported artifact takes and returns, read from the artifact itself
(for the model card's loading code).

The model card's loading code is generated from this, so it names every
input the file really has, with the dtype and shape the file really wants:
a table model takes one input per column (text columns as strings), an image
model one array, an integer-only TFLite file int8 with its own scale.

Each format is read the cheap way that still reads the file: a SavedModel's
`serving_default` signature from its ``saved_model.pb``, a TFLite file's
signature from the interpreter, a ``.keras`` or ``.h5`` file's input layers
from the model config it stores (loading the model only when that config is
not a plain functional or Sequential one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.errors import ExportError, message

__all__ = ["InputSpec", "Signature", "read_signature"]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of an artifact.

    Attributes:
        name: The input's name (a SavedModel or TFLite signature key, a Keras
            input layer's name).
        dtype: Its NumPy dtype name (`"float32"`, `"int8"`), or `"string"`
            for text.
        shape: Its shape after the batch dimension (`None` where any size
            goes); `()` for a table column.
        quantization: `(scale, zero_point)` of an integer TFLite input that
            stands for real values, else `None`.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    quantization: tuple[float, int] | None = None


@dataclasses.dataclass(frozen=True)
class Signature:
    """An artifact's inputs and outputs, as a user calls it.

    Attributes:
        format: `"savedmodel"`, `"keras"` (also `.h5`), `"tflite"` or `"onnx"`.
        inputs: Every input, in the order the artifact lists them.
        outputs: The output names (signature keys; a Keras model's output
            layers).
        by_name: A Keras model takes a dict of inputs by name (it was built
            with a dict of inputs); else one array, or a list in `inputs`'
            order. Signatures (SavedModel, TFLite) always take names.
        output_quantization: `(scale, zero_point)` of an integer TFLite
            output that stands for real values, else `None`.
        modules: Modules to import before loading a Keras file: those that
            register its custom layers.
    """

    format: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    by_name: bool = True
    output_quantization: tuple[float, int] | None = None
    modules: tuple[str, ...] = ()


def _dtype_name(dtype: Any) -> str:
    dtype = tf.dtypes.as_dtype(dtype)
    return "string" if dtype == tf.string else dtype.as_numpy_dtype.__name__


def _savedmodel(path: Path) -> Signature:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = next(g for g in proto.meta_graphs if "serving_default" in g.signature_def)
    signature = graph.signature_def["serving_default"]
    inputs = tuple(
        InputSpec(
            name,
            _dtype_name(info.dtype),
            tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim[1:]),
        )
        for name, info in sorted(signature.inputs.items())
    )
    return Signature("savedmodel", inputs, tuple(sorted(signature.outputs)))


def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    scale, zero = detail["quantization"]
    if scale and np.issubdtype(detail["dtype"], np.integer):
        return float(scale), int(zero)
    return None


def _tflite(path: Path) -> Signature:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    inputs = tuple(
        InputSpec(
            name,
            "string" if detail["dtype"] == np.bytes_ else np.dtype(detail["dtype"]).name,
            tuple(int(d) if d >= 0 else None for d in detail["shape_signature"][1:]),
            _quantization(detail),
        )
        for name, detail in runner.get_input_details().items()
    )
    outputs = runner.get_output_details()
    quantized = [_quantization(d) for d in outputs.values()]
    return Signature(
        "tflite", inputs, tuple(outputs), output_quantization=next(iter(quantized), None)
    )


#: ONNX element types (`onnx.TensorProto`) as dtype names.
_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 8: "string", 9: "bool"}


def _onnx(path: Path) -> Signature:
    import onnx  # the optional extra kerastrain[onnx]

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = tuple(
        InputSpec(
            i.name,
            _ONNX_TYPES.get(i.type.tensor_type.elem_type, "float32"),
            tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:]),
        )
        for i in graph.input
        if i.name not in initializers
        for dims in [i.type.tensor_type.shape.dim]
    )
    return Signature("onnx", inputs, tuple(o.name for o in graph.output))


def _keras_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs["model_config"]
    return json.loads(config.decode() if isinstance(config, bytes) else config)


def _registered(config: Any) -> Iterator[tuple[str, str | None]]:
    """Registered class names (``package>Class``) anywhere in a Keras config,
    with the module a ``.keras`` config names for each (an ``.h5`` one names
    none)."""
    if isinstance(config, dict):
        for key in ("registered_name", "class_name"):
            value = config.get(key)
            if isinstance(value, str) and ">" in value:
                yield value, config.get("module")
                break
        for value in config.values():
            yield from _registered(value)
    elif isinstance(config, list):
        for value in config:
            yield from _registered(value)


def _modules(config: dict[str, Any]) -> tuple[str, ...]:
    """The modules whose import registers the config's custom classes: named
    by a ``.keras`` config, looked up in this process's registry for an
    ``.h5`` one (where the layers were registered to write it), else the
    registering package."""
    modules: list[str] = []
    for name, module in _registered(config):
        if module is None:
            cls = keras.saving.get_registered_object(name)
            module = cls.__module__ if cls is not None else name.split(">")[0]
        if module not in modules:
            modules.append(module)
    return tuple(modules)


def _keras_from_config(config: dict[str, Any]) -> Signature | None:
    """The signature from a functional or Sequential config; `None` for any
    other model (a subclassed one), which has to be loaded."""
    if config.get("class_name") not in ("Functional", "Model", "Sequential"):
        return None
    body = config["config"]
    layers = {layer["config"]["name"]: layer for layer in body["layers"]}
    entries = body.get("input_layers")
    if config["class_name"] == "Sequential":
        first = body["layers"][0] if body["layers"] else None
        if first is None or first["class_name"] != "InputLayer":
            return None
        names, by_name = [first["config"]["name"]], False
    elif isinstance(entries, dict):
        names, by_name = [entry[0] for entry in entries.values()], True
    else:
        if entries and isinstance(entries[0], str):  # a single input: [name, 0, 0]
            entries = [entries]
        names, by_name = [entry[0] for entry in entries], False
    inputs = []
    for name in names:
        layer = layers.get(name, {}).get("config", {})
        shape = layer.get("batch_input_shape") or layer.get("batch_shape")
        if shape is None:
            return None
        inputs.append(
            InputSpec(name, _dtype_name(layer.get("dtype") or "float32"), tuple(shape[1:]))
        )
    outputs = body.get("output_layers") or []
    if outputs and isinstance(outputs[0], str):
        outputs = [outputs]
    return Signature(
        "keras",
        tuple(inputs),
        tuple(entry[0] for entry in outputs),
        by_name=by_name,
        modules=_modules(config),
    )


def _keras_loaded(path: Path, config: dict[str, Any]) -> Signature:
    model = keras.models.load_model(path, compile=False)
    by_name = isinstance(model.input, dict)
    named = model.input.items() if by_name else zip(model.input_names, model.inputs)
    inputs = tuple(
        InputSpec(name, _dtype_name(tensor.dtype), tuple(tensor.shape[1:]))
        for name, tensor in named
    )
    return Signature(
        "keras", inputs, tuple(model.output_names), by_name=by_name, modules=_modules(config)
    )


def read_signature(path: str | os.PathLike) -> Signature:
    """The inputs and outputs of an exported artifact, read from the file.

    Args:
        path: A SavedModel folder, a `.keras`/`.h5` file, a `.tflite` file or
            an `.onnx` file.

    Returns:
        Its `Signature`.

    Raises:
        ExportError: When the artifact's signature cannot be read.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _savedmodel(path)
        if path.suffix == ".tflite":
            return _tflite(path)
        if path.suffix == ".onnx":
            return _onnx(path)
        if path.suffix in (".keras", ".h5"):
            config = _keras_config(path)
            return _keras_from_config(config) or _keras_loaded(path, config)
    except Exception as exc:
        raise ExportError(
            f"Reading the input signature of {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    raise ExportError(
        message(
            "Unknown artifact type",
            received={"path": str(path)},
            allowed="Give a SavedModel folder or a .tflite, .onnx, .keras or .h5 file",
        )
    )
