"""Export options: ``fit_pipeline(export={...})``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from kerastrain.config.base import Section, config_error, option

Format = Literal["savedmodel", "keras", "h5", "tflite"]
TFLiteMode = Literal["float32"]


@dataclasses.dataclass
class ExportConfig(Section):
    """Which artifacts are written and how they are checked.

    Attributes:
        formats: Any of `"savedmodel"` (a directory with a `serving_default`
            signature), `"keras"` (tf_keras `.keras` file), `"h5"`, `"tflite"`.
            An empty list exports nothing. Defaults to
            `["savedmodel", "keras", "tflite"]`.
        tflite: The TFLite conversion mode. Defaults to `"float32"`.
        verify: Reload every artifact, run it on the test split, and fail with
            `ExportError` when it disagrees with the Keras model. Defaults to
            `True`.
        atol: Absolute tolerance between an artifact's outputs and the Keras
            model's (float artifacts): each output may differ by
            `atol + rtol * |keras output|`. Defaults to `1e-4`.
        rtol: Relative tolerance, for outputs far from unit scale
            (regression in original units). Defaults to `1e-5`.
    """

    _path: ClassVar[str] = "export"

    formats: list[Format] = dataclasses.field(
        default_factory=lambda: ["savedmodel", "keras", "tflite"])
    tflite: TFLiteMode = "float32"
    verify: bool = True
    atol: float = option(1e-4, gt=0.0)
    rtol: float = option(1e-5, ge=0.0)

    def validate(self) -> None:
        seen = set()
        for fmt in self.formats:
            if fmt in seen:
                raise config_error("export.formats", self.formats, "a list without repeats")
            seen.add(fmt)
