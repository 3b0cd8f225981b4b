"""Predictors: any exported artifact reloaded as a function from rows to outputs.

Each artifact is reloaded the way a user would (``tf.saved_model.load``,
``tf_keras.models.load_model``, the LiteRT interpreter, an onnxruntime
session) and called batch by batch; TFLite files are also timed on one
example.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.batching import predict_batched, take
from kerastrain.errors import ConfigError, ExportError, message
from kerastrain.export.model_files import check_model_file
from kerastrain.export.text import Tokenizers, load_text_ops

logger = logging.getLogger(__name__)

__all__ = ["load_predictor", "tflite_latency", "Predictor", "TFLiteRunner"]

#: A function from input rows (an array or a dict of columns) to outputs.
Predictor = Callable[[Any], np.ndarray]


def _savedmodel_predictor(path: Path) -> Predictor:
    load_text_ops(path)  # a subword tokenizer's ops come from tensorflow-text
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ExportError(
            message(
                f"The SavedModel {str(path)!r} has no 'serving_default' signature",
                received={"signatures": sorted(loaded.signatures)},
                allowed="Save it with a serving signature (tf_keras's model.save and "
                "tf.saved_model.save of a Keras model write one)",
            )
        )
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    (output,) = signature.structured_outputs

    def predict(x: Any) -> np.ndarray:
        given = x if isinstance(x, dict) else {next(iter(specs)): x}
        return signature(
            **{
                name: tf.convert_to_tensor(_plain(given[name]), spec.dtype)
                for name, spec in specs.items()
            }
        )[output].numpy()

    return predict


def _plain(column: Any) -> Any:
    """Object arrays of text as str arrays, which TensorFlow converts."""
    return column.astype(str) if getattr(column, "dtype", None) == np.dtype(object) else column


class TFLiteRunner:
    """A TFLite file's `serving_default` signature, run on rows of inputs
    (an array, or a dict of columns for a table). The text columns of a
    model that takes text are tokenized with the `tokenizer.json` beside the
    file (see `kerastrain.export.text`).

    It starts with the default delegates (XNNPACK) and falls back to the
    built-in kernels, saying so, when they fail: XNNPACK refuses to prepare
    some models with sparse weight tensors. Quantized (int8) inputs and
    outputs are converted with the file's own scale and zero point.
    """

    def __init__(self, path: Path, num_threads: int | None = None):
        self.path = path
        self.num_threads = num_threads
        self.tokenizers = Tokenizers.beside(path)  # a text model's file takes token ids
        self.kernels = "default delegates (XNNPACK)"
        try:
            self._open(fallback=False)
        except (RuntimeError, ValueError) as exc:
            self._use_builtin(exc)

    def _open(self, fallback: bool) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if fallback else OpResolverType.AUTO
        )
        interpreter = Interpreter(
            model_path=str(self.path),
            num_threads=self.num_threads,
            experimental_op_resolver_type=resolver,
        )
        self._run = interpreter.get_signature_runner("serving_default")
        self._inputs = self._run.get_input_details()
        (self._output,) = self._run.get_output_details().values()
        self._fallback = fallback

    def feed(self, x: Any) -> dict[str, np.ndarray]:
        """The inputs as the file takes them: text encoded, int8 quantized."""
        given = x if isinstance(x, dict) else {next(iter(self._inputs)): x}
        inputs = {}
        for name, detail in self._inputs.items():
            value, dtype = given[name], detail["dtype"]
            scale, zero = detail["quantization"]
            if self.tokenizers is not None and name in self.tokenizers.layers:
                inputs[name] = self.tokenizers(name, value)
            elif dtype == np.bytes_:
                inputs[name] = np.char.encode(_plain(value), "utf-8")
            elif np.issubdtype(dtype, np.integer) and scale:
                info = np.iinfo(dtype)
                quantized = np.round(np.asarray(value, np.float32) / scale + zero)
                inputs[name] = np.clip(quantized, info.min, info.max).astype(dtype)
            else:
                inputs[name] = np.asarray(value, dtype)
        return inputs

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        scale, zero = self._output["quantization"]
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - zero) * scale
        return y

    def invoke(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs inputs already fed (see `feed`); falls back once if the
        default delegates fail."""
        try:
            return self._run(**inputs)
        except (RuntimeError, ValueError) as exc:
            if self._fallback:
                raise
            self._use_builtin(exc)
            return self._run(**inputs)

    def _use_builtin(self, exc: Exception) -> None:
        logger.warning(
            "TFLite default delegates failed on %s (%s); using the built-in kernels.",
            self.path.name,
            exc,
        )
        self._open(fallback=True)
        self.kernels = "built-in kernels (the default delegates failed)"

    def __call__(self, x: Any) -> np.ndarray:
        (value,) = self.invoke(self.feed(x)).values()
        return self._dequantize(value)


def _tflite_predictor(path: Path) -> Predictor:
    return TFLiteRunner(path)


#: onnxruntime's input types as NumPy dtypes.
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.str_,
}


def _onnx_predictor(path: Path) -> Predictor:
    """An ONNX file in an onnxruntime session on the CPU, fed by input name
    (one array goes to its single input)."""
    import onnxruntime  # the optional extra kerastrain[onnx]

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: _ONNX_DTYPES.get(i.type, np.float32) for i in session.get_inputs()}
    (output, *_) = (o.name for o in session.get_outputs())

    def predict(x: Any) -> np.ndarray:
        given = x if isinstance(x, dict) else {next(iter(inputs)): x}
        feed = {name: np.asarray(_plain(given[name]), dtype) for name, dtype in inputs.items()}
        return session.run([output], feed)[0]

    return predict


def tflite_latency(
    path: str | os.PathLike,
    x: Any,
    runs: int = 200,
    warmup: int = 20,
    *,
    batch: int = 1,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Latency of a TFLite file, measured with the interpreter.

    One thread, the same kernels `load_predictor` uses, input conversion
    done before timing; the median over `runs` is robust to a loaded machine.
    Single-example latency always; with `batch` above 1, also the latency of
    a call on that many rows (batch serving), where channel pruning and int8
    show their speed most.

    Args:
        path: The `.tflite` file.
        x: Input rows (an array or a dict of columns); the first (and the
            first `batch`) are timed.
        runs: Timed runs. Defaults to `200`.
        warmup: Untimed runs first. Defaults to `20`.
        batch: Rows of the batch call; capped at the rows given; `1` times
            single examples only. Defaults to `1`.
        max_seconds: Stop timing a call after this long if at least 5 runs
            were timed. Defaults to `None` (every run).

    Returns:
        `latency_ms` (the median), `latency_p90_ms` and `kernels`; with a
        batch, `batch_latency_ms` (median per call) and `batch_rows`.
    """
    runner = TFLiteRunner(Path(path), num_threads=1)

    def median_ms(rows: int) -> tuple[float, list[float]]:
        inputs = runner.feed(take(x, 0, rows))
        for _ in range(max(warmup, 1)):  # the first run settles the kernels (may fall back)
            runner.invoke(inputs)
        times: list[float] = []
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        while len(times) < runs and (
            deadline is None or len(times) < 5 or time.perf_counter() < deadline
        ):
            start = time.perf_counter()
            runner.invoke(inputs)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times), times

    single, times = median_ms(1)
    result: dict[str, Any] = {
        "latency_ms": single,
        "latency_p90_ms": 1e3 * float(np.percentile(times, 90)),
        "kernels": runner.kernels,
    }
    rows = min(batch, len(next(iter(x.values())) if isinstance(x, dict) else x))
    if rows > 1:
        result["batch_latency_ms"], _ = median_ms(rows)
        result["batch_rows"] = rows
    return result


def load_predictor(
    path: str | os.PathLike, *, trust: bool = False, what: str = "path", batch_size: int = 512
) -> Predictor:
    """A function from input rows to model outputs, for any exported artifact.

    The file is checked first (`kerastrain.export.model_files.check_model_file`): a
    model whose loading would run code it carries (a `Lambda` layer's
    bytecode, a SavedModel graph that writes files) is refused unless
    ``trust`` is True. A SavedModel folder is loaded with
    ``tf.saved_model.load`` and called through its ``serving_default``
    signature; a ``.keras`` file in Keras's safe mode unless trusted.

    Args:
        path: A SavedModel folder, a `.keras`/`.h5` file, a `.tflite` file,
            or an `.onnx` file (run in onnxruntime on the CPU).
        trust: Whether the file is trusted (one the run itself wrote, or one
            the user vouches for). Defaults to `False`.
        what: The argument or option the path was given as, for messages.
            Defaults to `"path"`.
        batch_size: Rows per call into the artifact. Defaults to `512`.

    Returns:
        `predict(x) -> outputs`, batching internally.

    Raises:
        ExportError: When the artifact is missing, damaged or cannot be loaded.
        ConfigError: When it would run code and ``trust`` is False.
    """
    path = Path(path)
    kind = check_model_file(path, trust=trust, what=what, keras_savedmodel=False)
    try:
        if kind == "savedmodel":
            fn = _savedmodel_predictor(path)
        elif kind == "tflite":
            fn = _tflite_predictor(path)
        elif kind == "onnx":
            fn = _onnx_predictor(path)
        else:
            load_text_ops(path)  # a subword tokenizer's layer and ops
            options = {"safe_mode": not trust} if kind == "keras" else {}
            model = keras.models.load_model(path, compile=False, **options)
            fn = lambda x: model(x, training=False).numpy()  # noqa: E731
    except (ExportError, ConfigError):  # ConfigError: an extra it needs is missing
        raise
    except Exception as exc:
        raise ExportError(
            message(
                f"Reloading {str(path)!r} failed: {type(exc).__name__}: {exc}",
                allowed="Give a complete model file saved by tf_keras (or a TFLite file "
                "written by the TFLite converter, an ONNX file onnxruntime runs)",
            )
        ) from exc
    return lambda x: predict_batched(fn, x, batch_size)
