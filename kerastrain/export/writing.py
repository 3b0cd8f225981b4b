"""Writing a model's artifacts: SavedModel, .keras, h5, TFLite and ONNX files.

Every artifact is written under a temporary name in its final folder and
renamed into place (`kerastrain.files.atomic_path`), so an interrupted run
never leaves a half-written file where a finished one is expected. TFLite
files are converted from a SavedModel, in float32, float16, dynamic-range or
int8 (calibrated on a seeded sample of training rows); an ONNX file is
converted from the SavedModel too (`kerastrain.export.onnx`). With
`export.serving_version` the SavedModel goes to ``savedmodel/<version>/``,
the layout TensorFlow Serving loads.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.batching import num_rows, take
from kerastrain.config import ExportConfig
from kerastrain.config.export import TFLiteMode
from kerastrain.errors import ConfigError, ExportError, KerastrainError, message, one_of
from kerastrain.export.onnx import convert_to_onnx
from kerastrain.export.text import save_token_savedmodel, text_inputs, write_tokenizer
from kerastrain.files import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "export_model",
    "FILENAMES",
    "Artifacts",
    "convert_to_tflite",
    "convert_modes",
    "artifact_bytes",
    "input_standardizers",
    "representative_sample",
    "tflite_key",
]

#: Where each format is written inside the run folder.
FILENAMES = {
    "savedmodel": "savedmodel",
    "keras": "model.keras",
    "h5": "model.h5",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
}


class Artifacts(dict):
    """Format name -> path, as written by `export_model`.

    Attributes:
        approximate: The names of the artifacts that are not expected to match
            the Keras model to `atol` (quantized TFLite files, and a
            quantization-aware model's TFLite files); they are verified by
            agreement instead.
        sources: Artifact name -> the in-memory model it was written from,
            when that is not the model being verified (a QAT model's float
            twin, in `.keras`/`.h5`): it is checked against that model.
        tokenizer: For a model that takes text, the `tokenizer.json` its
            TFLite files (which take token ids) are used with; else None.
    """

    def __init__(
        self,
        *args: Any,
        approximate: set[str] | None = None,
        sources: dict[str, keras.Model] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.approximate: set[str] = set(approximate or ())
        self.sources: dict[str, keras.Model] = dict(sources or {})
        self.tokenizer: Path | None = None


def tflite_key(mode: str) -> str:
    """The artifact name of a TFLite file: `"tflite"` for float32, else
    `"tflite_<mode>"` (its file is `model_<mode>.tflite`)."""
    return "tflite" if mode == "float32" else f"tflite_{mode}"


def _final_path(run_dir: Path, fmt: str, mode: str | None, config: ExportConfig) -> Path:
    """Where an artifact goes: its `FILENAMES` entry, a TFLite mode's own
    file, the SavedModel under its serving version when one is set."""
    if mode not in (None, "float32"):
        return run_dir / f"model_{mode}.tflite"
    if fmt == "savedmodel" and config.serving_version is not None:
        return run_dir / FILENAMES[fmt] / str(config.serving_version)
    return run_dir / FILENAMES[fmt]


def _save_savedmodel(model: keras.Model, path: Path) -> None:
    # tf_keras writes a `serving_default` signature named after the Input and
    # output layers, which TFLite conversion and TF Serving both use.
    model.save(path, save_format="tf", include_optimizer=False)


def representative_sample(x: Any, rows: int, seed: int = 0) -> Any:
    """A seeded random sample of ``rows`` rows of ``x`` (an array or a dict
    of columns; all of it when it has fewer)."""
    count = num_rows(x)
    if count <= rows:
        return x
    picked = np.sort(np.random.default_rng(seed).choice(count, rows, replace=False))
    if isinstance(x, dict):
        return {k: np.asarray(v)[picked] for k, v in x.items()}
    return np.asarray(x)[picked]


def _table_layer(layer: keras.layers.Layer) -> bool:
    """One of the layers `kerastrain.data.layers` registers under the
    package ``kerastrain`` (`FillMissing`, `MissingIndicator`,
    `EncodeCategory`), known by that name: export sits beside data, not
    above it, and does not import it."""
    return keras.saving.get_registered_name(type(layer)).startswith("kerastrain>")


def input_standardizers(model: keras.Model) -> list[str]:
    """The preprocessing that kerastrain puts inside every model, which int8
    conversion keeps in float: the `Normalization` layers fed straight by the
    model's inputs, and for a table the layers that read its raw columns
    (`FillMissing`, `MissingIndicator`, `EncodeCategory`) with the
    `Normalization` after them. One int8 scale cannot hold raw columns of
    different ranges (an area of 2,000 beside a smoothness of 0.1)."""
    names: list[str] = []
    for layer in model.layers:
        if not layer.inbound_nodes:
            continue
        inbound = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
        raw = all(isinstance(i, keras.layers.InputLayer) for i in inbound)
        if (_table_layer(layer) and raw) or (
            isinstance(layer, keras.layers.Normalization)
            and all(isinstance(i, keras.layers.InputLayer) or i.name in names for i in inbound)
        ):
            names.append(layer.name)
    return names


def _op_names(content: bytes, layers: list[str]) -> list[str]:
    """The names of the ops (their output tensors) of ``layers`` in a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=content).get_tensor_details()
    return [d["name"] for d in details if any(f"/{layer}/" in f"/{d['name']}" for layer in layers)]


def _int8_keeping_float(converter: Any, layers: list[str]) -> bytes:
    """int8 conversion that leaves the ops of ``layers`` in float.

    This is TFLite's selective quantization, done the way its public
    `tf.lite.experimental.QuantizationDebugger` does it (calibrate, then
    `mlir_quantize` with denylisted nodes) minus the debugger's extra float
    conversion and instrumented model, which tripled the conversion time:
    the input standardization then runs in float and int8 starts after it.
    """
    from tensorflow.lite.python import convert as lite_convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    return lite_convert.mlir_quantize(
        calibrated,
        disable_per_channel=False,
        fully_quantize=False,
        denylisted_nodes=_op_names(calibrated, layers),
    )


def _calibration_example(row: Any) -> Any:
    """One row as the TFLite converter's representative dataset yields it."""
    if isinstance(row, dict):
        return {k: np.asarray(v) for k, v in row.items()}
    return [np.asarray(row, np.float32)]


def _check_mode(mode: str) -> None:
    modes = typing.get_args(TFLiteMode)
    if mode not in modes:
        raise ConfigError(
            message(
                "Unknown TFLite mode",
                received={"mode": mode},
                allowed=f"Use {one_of(modes)}",
                candidates=modes,
            )
        )


def _convert_tflite(
    savedmodel_dir: Path,
    mode: str,
    representative: Any = None,
    int8_io: bool = False,
    float_layers: list[str] | None = None,
) -> bytes:
    _check_mode(mode)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if representative is None or num_rows(representative) == 0:
            raise ConfigError(
                message(
                    "The int8 TFLite mode calibrates on training rows; none were given",
                    received={"representative": representative},
                    allowed="Pass a few training input rows as `representative`",
                )
            )
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            _calibration_example(take(representative, i, i + 1))
            for i in range(num_rows(representative))
        )
        if float_layers and not int8_io:
            return _int8_keeping_float(conv, float_layers)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    return conv.convert()


def convert_to_tflite(
    model: keras.Model,
    mode: str = "float32",
    *,
    representative: np.ndarray | None = None,
    int8_io: bool = False,
) -> bytes:
    """Converts a tf_keras model to TFLite bytes through a scratch SavedModel.

    Args:
        model: The model (compression wrappers stripped, or a QAT model).
        mode: `"float32"`, `"float16"`, `"dynamic"` or `"int8"`.
            Defaults to `"float32"`.
        representative: Input rows the int8 mode calibrates on.
            Defaults to `None`.
        int8_io: int8 input and output tensors (int8 mode). Defaults to `False`.

    Returns:
        The `.tflite` file's content.

    Raises:
        ConfigError: For an unknown mode, or the int8 mode without
            `representative` rows.
    """
    return convert_modes(model, [mode], representative=representative, int8_io=int8_io)[mode]


def convert_modes(
    model: keras.Model,
    modes: Sequence[str],
    *,
    representative: np.ndarray | None = None,
    int8_io: bool = False,
) -> dict[str, bytes]:
    """`convert_to_tflite` for several modes, saving the SavedModel once."""
    for mode in modes:
        _check_mode(mode)  # before the SavedModel is written
    scratch = Path(tempfile.mkdtemp(prefix="kerastrain-tflite-"))
    try:
        _save_savedmodel(model, scratch / "savedmodel")
        return {
            mode: _convert_tflite(
                scratch / "savedmodel", mode, representative, int8_io, input_standardizers(model)
            )
            for mode in modes
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _jobs(config: ExportConfig) -> list[tuple[str, str, str | None]]:
    """(artifact name, format, TFLite mode) of every file to write."""
    jobs: list[tuple[str, str, str | None]] = []
    for fmt in config.formats:
        if fmt == "tflite":
            jobs += [(tflite_key(mode), fmt, mode) for mode in config.tflite_modes]
        else:
            jobs.append((fmt, fmt, None))
    return jobs


def export_model(
    model: keras.Model,
    run_dir: str | os.PathLike,
    config: ExportConfig,
    *,
    representative: np.ndarray | None = None,
    float_model: keras.Model | None = None,
) -> Artifacts:
    """Writes ``model`` in every format of ``config.formats``.

    Args:
        model: The trained tf_keras model (compression wrappers stripped, or
            a quantization-aware model).
        run_dir: The folder the artifacts go into.
        config: `formats`, the TFLite modes and `representative_rows`.
        representative: Training input rows; the int8 mode calibrates on a
            seeded sample of `config.representative_rows` of them.
            Defaults to `None`.
        float_model: For a quantization-aware `model`, its float twin (the
            same weights without fake quantization), written to `.keras` and
            `.h5` instead and verified against itself: TF-MOT's quantized
            layers do not reload from those formats, while the SavedModel
            (written from `model`) reloads with no scopes. Defaults to `None`.

    Returns:
        Each artifact's name mapped to the path written; `.approximate` names
        those verified by agreement rather than `atol`, `.sources` the model
        a float twin's files are verified against.

    Raises:
        ConfigError: For the int8 mode without `representative` rows, or
            `"onnx"` for a model that takes text.
        ExportError: When a format cannot be written; what was there before
            is kept.
    """
    run_dir = Path(run_dir)
    artifacts = Artifacts()
    savedmodel_dir: Path | None = None
    scratch = token_dir = None
    sample = (
        None
        if representative is None
        else representative_sample(representative, config.representative_rows)
    )
    try:
        for name, fmt, mode in _jobs(config):
            final = _final_path(run_dir, fmt, mode, config)
            try:
                if fmt == "savedmodel":
                    with atomic_path(final) as tmp:
                        _save_savedmodel(model, tmp)
                    savedmodel_dir = final
                elif fmt in ("keras", "h5"):
                    with atomic_path(final) as tmp:
                        (float_model or model).save(tmp, save_format=fmt if fmt == "h5" else None)
                else:  # tflite and onnx: converted from a SavedModel
                    if savedmodel_dir is None:
                        scratch = Path(tempfile.mkdtemp(prefix="kerastrain-export-"))
                        savedmodel_dir = scratch / "savedmodel"
                        _save_savedmodel(model, savedmodel_dir)
                    if fmt == "tflite" and text_inputs(model):  # from token ids: see export.text
                        if token_dir is None:
                            token_dir = Path(tempfile.mkdtemp(prefix="kerastrain-tokens-"))
                            save_token_savedmodel(model, token_dir / "savedmodel")
                            artifacts.tokenizer = write_tokenizer(model, run_dir)
                        content = _convert_tflite(token_dir / "savedmodel", mode)
                    elif fmt == "onnx":
                        content = convert_to_onnx(savedmodel_dir)
                    else:
                        content = _convert_tflite(
                            savedmodel_dir,
                            mode,
                            sample,
                            config.int8_io and mode == "int8",
                            input_standardizers(model),
                        )
                    with atomic_path(final) as tmp:
                        tmp.write_bytes(content)
            except KerastrainError:
                raise
            except Exception as exc:  # a converter or saver failure, named
                raise ExportError(
                    f"Exporting the model as {name!r} to {final} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            artifacts[name] = final
            if mode not in (None, "float32") or (
                float_model is not None and fmt in ("tflite", "onnx")
            ):
                artifacts.approximate.add(name)
            if float_model is not None and fmt in ("keras", "h5"):
                artifacts.sources[name] = float_model
            raw, packed = artifact_bytes(final)
            logger.info(
                "Exported %s: %s (%.1f KiB, %.1f KiB gzipped).",
                name,
                final,
                raw / 1024,
                packed / 1024,
            )
    finally:
        for folder in (scratch, token_dir):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    return artifacts


def artifact_bytes(path: str | os.PathLike) -> tuple[int, int]:
    """Raw and gzip-compressed (level 9) bytes of a file, or summed over the
    files of a folder: the size that ships."""
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    raw = packed = 0
    for f in files:
        content = f.read_bytes()
        raw += len(content)
        packed += len(gzip.compress(content, compresslevel=9, mtime=0))
    return raw, packed
