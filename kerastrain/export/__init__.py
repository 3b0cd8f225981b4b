"""Export: SavedModel, .keras, h5, TFLite and ONNX, written atomically, then verified.

- `writing`: `export_model` writes every format of the export config (TFLite
  through a SavedModel, in each requested mode);
- `onnx`: `convert_to_onnx` converts the SavedModel with tf2onnx;
  `check_onnx_data` refuses ONNX, before training, for data it cannot carry;
- `model_files`: `check_model_file` reads a model file a user gave as data
  and refuses one whose loading would run code it carries (the trust model);
- `predictors`: `load_predictor` reloads any artifact as a function from
  rows to outputs, `tflite_latency` times a TFLite file on one example;
- `verify`: `verify_artifacts` runs each artifact on held-out rows and
  checks it answers like the Keras model.
"""

from kerastrain.export.onnx import check_onnx_data, convert_to_onnx
from kerastrain.export.predictors import Predictor, load_predictor, tflite_latency
from kerastrain.export.verify import verify_artifacts
from kerastrain.export.writing import (
    FILENAMES,
    Artifacts,
    artifact_bytes,
    convert_modes,
    convert_to_tflite,
    export_model,
    input_standardizers,
    representative_sample,
    tflite_key,
)

__all__ = [
    "FILENAMES",
    "Artifacts",
    "Predictor",
    "artifact_bytes",
    "check_onnx_data",
    "convert_to_onnx",
    "convert_modes",
    "convert_to_tflite",
    "export_model",
    "input_standardizers",
    "load_predictor",
    "representative_sample",
    "tflite_key",
    "tflite_latency",
    "verify_artifacts",
]
