"""ONNX: the exported SavedModel converted by tf2onnx, and refused up front
for the tables onnxruntime cannot run.

The conversion goes through the SavedModel's ``serving_default`` signature
(what ``python -m tf2onnx.convert --saved-model`` does), never through
``tf2onnx.convert.from_keras``, which is broken on TensorFlow 2.16 and later
(onnx/tensorflow-onnx #2329, #2348). The file keeps the signature's input and
output names, so it takes the same dict of inputs as the SavedModel.

A table with text columns converts, but onnxruntime fails on its string
lookups (tf2onnx turns the comparison of a text value into a cast to an
integer: "Cast ... stoll"), so `"onnx"` is refused for such data before
training, with what works instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kerastrain._keras import tf
from kerastrain.errors import ConfigError, message

logger = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "check_onnx_data", "convert_to_onnx"]

#: The ONNX opset the files are written in (onnxruntime 1.17+ runs it).
ONNX_OPSET = 17


def _text_refusal(columns: list[str]) -> ConfigError:
    return ConfigError(
        message(
            "export.formats includes 'onnx', but the table has text columns "
            f"({', '.join(map(repr, columns))}): tf2onnx converts their string lookups into "
            "an ONNX graph that onnxruntime cannot run",
            received={"export.formats": "[..., 'onnx']", "text columns": columns},
            allowed="Leave 'onnx' out for this data (the SavedModel, .keras and TFLite "
            "files take the text columns as they are), or give those columns as integer "
            "codes (e.g. pandas `df[col].astype('category').cat.codes`): kerastrain then "
            "encodes them inside the model like any numeric category and the ONNX file works",
        )
    )


def check_onnx_data(formats: list[str], prepared: Any) -> None:
    """Refuses `"onnx"`, before training, for a table with text columns.

    Args:
        formats: `export.formats`.
        prepared: The prepared data (its `encoding` names a table's columns).

    Raises:
        ConfigError: Naming the text columns and what works instead.
    """
    encoding = getattr(prepared, "encoding", None)
    if "onnx" not in formats or encoding is None:
        return
    text = [c.name for c in encoding.columns if c.text]
    if text:
        raise _text_refusal(text)


def convert_to_onnx(savedmodel_dir: Path) -> bytes:
    """Converts a SavedModel's ``serving_default`` signature to ONNX.

    Args:
        savedmodel_dir: The SavedModel folder.

    Returns:
        The ``.onnx`` file's content (opset `ONNX_OPSET`), whose inputs and
        output are named as in the signature.

    Raises:
        ConfigError: When the signature takes text (see the module's notes):
            raised here for callers of `export_model` that did not go
            through `check_onnx_data`.
    """
    before = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    # The optional extra kerastrain[onnx], checked by ExportConfig.
    from tf2onnx import convert, tf_loader

    # Importing tf2onnx.convert sets TF_CPP_MIN_LOG_LEVEL=3 for the whole
    # process (and the processes it starts); the user's setting is kept.
    if before is None:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = before

    signature = tf.saved_model.load(str(savedmodel_dir)).signatures["serving_default"]
    text = sorted(
        name
        for name, spec in signature.structured_input_signature[1].items()
        if spec.dtype == tf.string
    )
    if text:
        raise _text_refusal(text)
    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(savedmodel_dir),
        None,
        None,
        signatures=["serving_default"],
        return_tensors_to_rename=True,
    )
    proto, _ = convert.from_graph_def(
        graph_def,
        name="kerastrain",
        input_names=inputs,
        output_names=outputs,
        opset=ONNX_OPSET,
        tensors_to_rename=renames,
    )
    return proto.SerializeToString()
