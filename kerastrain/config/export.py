"""Export options: ``fit_pipeline(export={...})``."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import ClassVar, Literal

from kerastrain.config.base import Section, option
from kerastrain.errors import ConfigError, config_error, message

Format = Literal["savedmodel", "keras", "h5", "tflite", "onnx"]
#: The modules the `"onnx"` format needs (the extra ``kerastrain[onnx]``).
ONNX_MODULES = ("tf2onnx", "onnx", "onnxruntime")
TFLiteMode = Literal["float32", "float16", "dynamic", "int8"]


@dataclasses.dataclass
class ExportConfig(Section):
    """Which artifacts are written and how they are checked.

    Attributes:
        formats: Any of `"savedmodel"` (a directory with a `serving_default`
            signature), `"keras"` (tf_keras `.keras` file), `"h5"`, `"tflite"`,
            `"onnx"` (`model.onnx`, opset 17, converted from the SavedModel
            by tf2onnx and verified in onnxruntime; needs the extra
            `pip install 'kerastrain[onnx]'`; tables with text columns are
            refused before training, since onnxruntime cannot run their
            string lookups). An empty list exports nothing. Defaults to
            `["savedmodel", "keras", "tflite"]`.
        tflite: The TFLite conversion mode, or a list of modes (one file
            each): `"float32"`; `"float16"` (weights stored as float16);
            `"dynamic"` (int8 weights, float activations); `"int8"` (int8
            weights and activations, calibrated on rows of the training
            split; the input standardization runs in float before the first
            quantization, since one int8 scale cannot hold raw features of
            different ranges). A float32
            file is `model.tflite` (artifact `"tflite"`); another mode's is
            `model_<mode>.tflite` (artifact `"tflite_<mode>"`).
            Defaults to `"float32"`.
        int8_io: With `"int8"`, the file is integer only and takes and
            returns int8 tensors (for integer-only accelerators); kerastrain
            quantizes the inputs and dequantizes the outputs when it runs
            it. The raw input then shares one scale: right for images, lossy
            for tabular features of different ranges. Defaults to `False`.
        representative_rows: Training rows the int8 conversion calibrates
            on. Defaults to `200`.
        verify: Reload every artifact, run it on the test split, and fail with
            `ExportError` when it disagrees with the Keras model. Defaults to
            `True`.
        atol: Absolute tolerance between an artifact's outputs and the Keras
            model's (float artifacts): each output may differ by
            `atol + rtol * |keras output|`. Defaults to `1e-4`.
        rtol: Relative tolerance, for outputs far from unit scale
            (regression in original units). Defaults to `1e-5`.
        min_agreement: For quantized TFLite files (and every TFLite file of
            a quantization-aware model), which cannot match to `atol`: the
            smallest share of test rows whose predicted class must match the
            Keras model's (regression: whose output is within 5% of the
            output range). Defaults to `0.98`.
        latency_runs: Single-example runs of each artifact whose median
            time is reported (`latency_ms` in `metrics.json`: a TFLite file in
            the interpreter on one thread, a SavedModel or Keras file called
            from Python, at most 2 s of runs); 0 measures nothing. Defaults
            to `200`.
        latency_batch: Rows of a batch call also timed for each TFLite file
            (`batch_latency_ms` in `metrics.json`, beside the single-example
            `latency_ms`): batch serving, where channel pruning and int8 gain
            most. Capped at the held-out rows; `1` times single examples
            only. Defaults to `64`.
        serving_version: Write the SavedModel under
            `<run>/savedmodel/<version>/`, the layout TensorFlow Serving
            loads (`--model_base_path=<run>/savedmodel`); the model card gives
            the REST request body for its signature. Defaults to `None`
            (`<run>/savedmodel/`).
    """

    _path: ClassVar[str] = "export"

    formats: list[Format] = dataclasses.field(
        default_factory=lambda: ["savedmodel", "keras", "tflite"]
    )
    tflite: TFLiteMode | list[TFLiteMode] = "float32"
    int8_io: bool = False
    representative_rows: int = option(200, gt=0)
    verify: bool = True
    atol: float = option(1e-4, gt=0.0)
    rtol: float = option(1e-5, ge=0.0)
    min_agreement: float = option(0.98, gt=0.0, le=1.0)
    latency_runs: int = option(200, ge=0)
    latency_batch: int = option(64, gt=0)
    serving_version: int | None = option(None, ge=0)

    def validate(self) -> None:
        seen = set()
        for fmt in self.formats:
            if fmt in seen:
                raise config_error("export.formats", self.formats, "a list without repeats")
            seen.add(fmt)
        modes = self.tflite_modes
        if not modes or len(set(modes)) != len(modes):
            raise config_error(
                "export.tflite", self.tflite, "a mode or a non-empty list of modes without repeats"
            )
        if self.serving_version is not None and "savedmodel" not in self.formats:
            raise config_error(
                "export.serving_version",
                self.serving_version,
                "None unless export.formats includes 'savedmodel' (the version is its folder)",
            )
        if "onnx" in self.formats:
            missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(
                    message(
                        "export.formats includes 'onnx', which needs the optional extra "
                        f"kerastrain[onnx]; not installed: {', '.join(missing)}",
                        received={"export.formats": self.formats},
                        allowed="Install it with `pip install 'kerastrain[onnx]'` (tf2onnx, "
                        "onnx, onnxruntime), or leave 'onnx' out of export.formats",
                    )
                )
        if self.int8_io and "int8" not in modes:
            raise config_error(
                "export.int8_io", self.int8_io, "False unless export.tflite includes 'int8'"
            )

    @property
    def tflite_modes(self) -> list[str]:
        """The TFLite modes as a list."""
        return [self.tflite] if isinstance(self.tflite, str) else list(self.tflite)
