"""TFLite for models that take text: the network from token ids, with the
vocabulary written beside it.

TFLite's built-in kernels have no string operations (`StringLower`,
`StringSplitV2`, ...), and the Python interpreter here cannot run the Flex
ones, so a model whose text inputs feed a `TextVectorization` layer is
converted from its token ids instead: each text input of the `.tflite` file
keeps its column's name and takes `(rows, length)` int64 ids (0 pads), every
other input is as in the SavedModel. ``tokenizer.json`` beside the file holds
each text input's vocabulary and tokenizer settings; `Tokenizers` applies
them (a TFLite runner given raw strings tokenizes them first), and a client
in another language does the same: lower-case, strip punctuation, split on
whitespace, look each token up (index in the vocabulary list; an unknown
token is 1). A subword column (``"kind": "wordpiece"``) is cut as
`kerastrain.wordpiece` says: BERT's basic uncased tokenization, then the
longest pieces of the vocabulary (``##`` marks a piece inside a word); its
tokenizer here is that module's layer, so its ops come from tensorflow-text,
which also has to be imported before a SavedModel holding them loads
(`load_text_ops`).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, message
from kerastrain.extras import require
from kerastrain.files import write_json

__all__ = [
    "TOKENIZER_FILE",
    "check_text_export",
    "text_inputs",
    "save_token_savedmodel",
    "write_tokenizer",
    "Tokenizers",
    "load_text_ops",
    "is_tokenizer",
]

#: The file beside a text model's `.tflite` files.
TOKENIZER_FILE = "tokenizer.json"
#: What a subword tokenizer leaves in a model's description: its
#: tensorflow-text op in a SavedModel's graph, its layer class in a Keras config.
SUBWORD_MARKERS = (b"FastWordpieceTokenize", b"WordPieceTokenizer")


def _wordpiece() -> Any:
    return require(
        "kerastrain.wordpiece",
        dependency="tensorflow_text",
        extra="text",
        feature="A model with a subword tokenizer",
    )


def load_text_ops(path: str | os.PathLike) -> None:
    """Loads what reading a model with a subword tokenizer needs, when the
    model at ``path`` has one: tensorflow-text's ops (for
    ``tf.saved_model.load``) and `kerastrain.wordpiece.WordPieceTokenizer`
    (for ``tf_keras.models.load_model``, which does not import a custom
    layer's module itself); nothing otherwise.

    Args:
        path: A SavedModel folder or a `.keras` or `.h5` file.

    Raises:
        ConfigError: When the model has a subword tokenizer and
            tensorflow-text is not installed.
    """
    path = Path(path)
    described = b""
    if (path / "saved_model.pb").is_file():
        described = (path / "saved_model.pb").read_bytes()
    elif path.suffix == ".keras" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "config.json" in archive.namelist():
                described = archive.read("config.json")
    elif path.suffix == ".h5" and path.is_file():
        import h5py  # installed with tf_keras

        with h5py.File(path, "r") as h5:
            config = h5.attrs.get("model_config", b"")
            described = config.encode() if isinstance(config, str) else bytes(config)
    if any(marker in described for marker in SUBWORD_MARKERS):
        _wordpiece()


def is_tokenizer(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` turns raw strings into token ids: a
    `TextVectorization`, or a layer that describes itself for
    ``tokenizer.json`` (`kerastrain.wordpiece.WordPieceTokenizer`)."""
    return isinstance(layer, keras.layers.TextVectorization) or hasattr(layer, "tokenizer_spec")


def check_text_export(formats: list[str], modes: list[str], prepared: Any) -> None:
    """Refuses, before training, the int8 TFLite mode for data with text
    columns: its calibration would need token ids, which it is not given.

    Raises:
        ConfigError: Naming the text columns and the modes that work.
    """
    encoding = getattr(prepared, "encoding", None)
    if "tflite" not in formats or "int8" not in modes or encoding is None:
        return
    text = [c.name for c in encoding.columns if c.kind == "text"]
    if text:
        raise ConfigError(
            message(
                f"export.tflite='int8' cannot calibrate a model that reads the text column(s) "
                f"{text}",
                received={"export.tflite": modes},
                allowed="Use the 'float32', 'float16' or 'dynamic' mode (weights quantized to "
                "int8, no calibration)",
            )
        )


def text_inputs(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The model's inputs that feed a tokenizer layer (`is_tokenizer`), by
    input name, with that layer (empty for a model without text)."""
    found = {}
    for layer in model.layers:
        if not is_tokenizer(layer) or not layer.inbound_nodes:
            continue
        (inbound,) = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
        if isinstance(inbound, keras.layers.InputLayer):
            found[inbound.name] = layer
    return found


def save_token_savedmodel(model: keras.Model, path: str | os.PathLike) -> None:
    """Saves the network from token ids (see the module's docstring) as a
    SavedModel whose `serving_default` takes the text columns' ids by their
    names, for the TFLite converter."""
    tokenizers = text_inputs(model)
    inputs, specs = {}, {}
    for name, tensor in zip(model.input_names, model.inputs):
        if name in tokenizers:
            inputs[name] = tokenizers[name].output
            specs[name] = tf.TensorSpec((None, None), tf.int64, name=name)
        else:
            inputs[name] = tensor
            specs[name] = tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
    network = keras.Model(inputs, model.outputs, name=f"{model.name}_token_ids")

    @tf.function(input_signature=[specs])
    def serve(columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"output": network(columns, training=False)}

    tf.saved_model.save(network, str(path), signatures=serve.get_concrete_function())


def write_tokenizer(model: keras.Model, run_dir: str | os.PathLike) -> Path:
    """Writes ``tokenizer.json`` (each text input's vocabulary, padding and
    out-of-vocabulary first, and its standardization and split) in
    ``run_dir``; returns its path."""
    described = {}
    for name, layer in text_inputs(model).items():
        if hasattr(layer, "tokenizer_spec"):
            described[name] = layer.tokenizer_spec()
            continue
        config = layer.get_config()
        described[name] = {
            "vocabulary": [str(token) for token in layer.get_vocabulary()],
            "standardize": config["standardize"],
            "split": config["split"],
            "padding_id": 0,
            "out_of_vocabulary_id": 1,
        }
    path = Path(run_dir) / TOKENIZER_FILE
    write_json(path, described)
    return path


class Tokenizers:
    """The tokenizers of ``tokenizer.json``: raw strings to int64 ids,
    padded to the batch's longest row (at least one column)."""

    def __init__(self, path: str | os.PathLike):
        described = json.loads(Path(path).read_text(encoding="utf-8"))
        self.layers = {name: self._layer(spec) for name, spec in described.items()}

    @staticmethod
    def _layer(spec: dict[str, Any]) -> keras.layers.Layer:
        if spec.get("kind") == "wordpiece":
            return _wordpiece().WordPieceTokenizer(spec["vocabulary"][2:])
        return keras.layers.TextVectorization(
            vocabulary=spec["vocabulary"][2:],
            standardize=spec["standardize"],
            split=spec["split"],
            output_mode="int",
        )

    @classmethod
    def beside(cls, path: Path) -> Tokenizers | None:
        """The tokenizers beside a `.tflite` file, or None when there are none."""
        found = path.parent / TOKENIZER_FILE
        return cls(found) if found.is_file() else None

    def __call__(self, name: str, values: Any) -> np.ndarray:
        strings = np.asarray(values)
        if strings.dtype.kind in "iu":  # ids already
            return strings.astype(np.int64)
        if strings.dtype == object:
            strings = strings.astype(str)
        ids = self.layers[name](tf.constant(strings)).numpy().astype(np.int64)
        if ids.shape[1] == 0:
            ids = np.zeros((len(ids), 1), np.int64)
        return ids
