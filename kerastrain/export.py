"""Export: SavedModel, .keras, h5 and TFLite, written atomically, then verified.

Every artifact is written under a temporary name in its final folder and
renamed into place, so an interrupted run never leaves a half-written file
where a finished one is expected. Verification reloads each artifact the way
a user would (``tf.saved_model.load``, ``tf_keras.models.load_model``, the
LiteRT interpreter), runs it on held-out rows and compares its outputs with
the Keras model's: to `atol` for float artifacts, by the share of rows whose
prediction agrees for quantized ones. Each artifact's raw and gzip size, and
each TFLite file's single-example latency, are measured on the way.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import ExportConfig
from kerastrain.errors import ExportError
from kerastrain.evaluate import compute_metrics, predicted_classes
from kerastrain.files import atomic_path
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "export_model",
    "load_predictor",
    "verify_artifacts",
    "FILENAMES",
    "Artifacts",
    "convert_to_tflite",
    "convert_modes",
    "artifact_bytes",
    "tflite_latency",
    "representative_sample",
    "tflite_key",
]

#: Where each format is written inside the run folder.
FILENAMES = {
    "savedmodel": "savedmodel",
    "keras": "model.keras",
    "h5": "model.h5",
    "tflite": "model.tflite",
}

#: The share of the output range within which a quantized regression output
#: counts as agreeing with the Keras model's.
REGRESSION_AGREEMENT_RTOL = 0.05

Predictor = Callable[[np.ndarray], np.ndarray]


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


def tflite_key(mode: str) -> str:
    """The artifact name of a TFLite file: `"tflite"` for float32, else
    `"tflite_<mode>"` (its file is `model_<mode>.tflite`)."""
    return "tflite" if mode == "float32" else f"tflite_{mode}"


def _save_savedmodel(model: keras.Model, path: Path) -> None:
    # tf_keras writes a `serving_default` signature named after the Input and
    # output layers, which TFLite conversion and TF Serving both use.
    model.save(path, save_format="tf", include_optimizer=False)


def representative_sample(x: Any, rows: int, seed: int = 0) -> Any:
    """A seeded random sample of ``rows`` rows of ``x`` (an array or a dict
    of columns; all of it when it has fewer)."""
    count = _rows(x)
    if count <= rows:
        return x
    picked = np.sort(np.random.default_rng(seed).choice(count, rows, replace=False))
    if isinstance(x, dict):
        return {k: np.asarray(v)[picked] for k, v in x.items()}
    return np.asarray(x)[picked]


def input_standardizers(model: keras.Model) -> list[str]:
    """The `Normalization` layers fed straight by the model's inputs: the
    standardization that kerastrain puts inside every model."""
    names = []
    for layer in model.layers:
        if (
            isinstance(layer, keras.layers.Normalization)
            and layer.inbound_nodes
            and all(
                isinstance(inbound, keras.layers.InputLayer)
                for inbound in tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
            )
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


def _convert_tflite(
    savedmodel_dir: Path,
    mode: str,
    representative: Any = None,
    int8_io: bool = False,
    float_layers: list[str] | None = None,
) -> bytes:
    conv = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if representative is None or _rows(representative) == 0:
            raise ExportError(
                "The int8 TFLite mode calibrates on training rows; none were "
                "given (representative=None)."
            )
        rows = representative
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            {k: np.asarray(v[i : i + 1]) for k, v in rows.items()}
            if isinstance(rows, dict)
            else [np.asarray(rows[i : i + 1], np.float32)]
            for i in range(_rows(rows))
        )
        if float_layers and not int8_io:
            return _int8_keeping_float(conv, float_layers)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif mode != "float32":
        raise ExportError(f"Unknown TFLite mode {mode!r}.")
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
        ExportError: When a format cannot be written; what was there before
            is kept.
    """
    run_dir = Path(run_dir)
    artifacts = Artifacts()
    savedmodel_dir: Path | None = None
    scratch = None
    sample = (
        None
        if representative is None
        else representative_sample(representative, config.representative_rows)
    )
    try:
        for name, fmt, mode in _jobs(config):
            final = run_dir / (
                FILENAMES[fmt] if mode in (None, "float32") else f"model_{mode}.tflite"
            )
            try:
                if fmt == "savedmodel":
                    with atomic_path(final) as tmp:
                        _save_savedmodel(model, tmp)
                    savedmodel_dir = final
                elif fmt in ("keras", "h5"):
                    with atomic_path(final) as tmp:
                        (float_model or model).save(tmp, save_format=fmt if fmt == "h5" else None)
                elif fmt == "tflite":
                    if savedmodel_dir is None:
                        scratch = Path(tempfile.mkdtemp(prefix="kerastrain-export-"))
                        savedmodel_dir = scratch / "savedmodel"
                        _save_savedmodel(model, savedmodel_dir)
                    content = _convert_tflite(
                        savedmodel_dir,
                        mode,
                        sample,
                        config.int8_io and mode == "int8",
                        input_standardizers(model),
                    )
                    with atomic_path(final) as tmp:
                        tmp.write_bytes(content)
            except ExportError:
                raise
            except Exception as exc:  # a converter or saver failure, named
                raise ExportError(
                    f"Exporting the model as {name!r} to {final} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            artifacts[name] = final
            if mode not in (None, "float32") or (float_model is not None and fmt == "tflite"):
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
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
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


def _rows(x: Any) -> int:
    """Rows of an array or of a dict of columns (a table)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _batched(fn: Callable[[Any], np.ndarray], x: Any, batch: int = 512) -> np.ndarray:
    take = (
        (lambda i: {k: v[i : i + batch] for k, v in x.items()})
        if isinstance(x, dict)
        else (lambda i: x[i : i + batch])
    )
    return np.concatenate([np.asarray(fn(take(i))) for i in range(0, _rows(x), batch)])


def _savedmodel_predictor(path: Path) -> Predictor:
    loaded = tf.saved_model.load(str(path))
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


def _first_row(x: Any) -> Any:
    """The first row of an array or of a dict of columns, batch axis kept."""
    return {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else x[:1]


class _TFLiteRunner:
    """A TFLite file's `serving_default` signature, run on rows of inputs
    (an array, or a dict of columns for a table).

    It starts with the default delegates (XNNPACK) and falls back to the
    built-in kernels, saying so, when they fail: XNNPACK refuses to prepare
    some models with sparse weight tensors. Quantized (int8) inputs and
    outputs are converted with the file's own scale and zero point.
    """

    def __init__(self, path: Path, num_threads: int | None = None):
        self.path = path
        self.num_threads = num_threads
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
            if dtype == np.bytes_:
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
    return _TFLiteRunner(path)


def tflite_latency(
    path: str | os.PathLike, x: Any, runs: int = 200, warmup: int = 20
) -> dict[str, Any]:
    """Single-example latency of a TFLite file, measured with the interpreter.

    One thread, the same kernels `load_predictor` uses, input conversion
    done before timing; the median over `runs` is robust to a loaded machine.

    Args:
        path: The `.tflite` file.
        x: Input rows (an array or a dict of columns); the first is timed.
        runs: Timed runs. Defaults to `200`.
        warmup: Untimed runs first. Defaults to `20`.

    Returns:
        `latency_ms` (the median), `latency_p90_ms` and `kernels`.
    """
    runner = _TFLiteRunner(Path(path), num_threads=1)
    inputs = runner.feed(_first_row(x))
    for _ in range(max(warmup, 1)):  # the first run settles the kernels (may fall back)
        runner.invoke(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.invoke(inputs)
        times.append(time.perf_counter() - start)
    return {
        "latency_ms": 1e3 * statistics.median(times),
        "latency_p90_ms": 1e3 * float(np.percentile(times, 90)),
        "kernels": runner.kernels,
    }


def load_predictor(path: str | os.PathLike) -> Predictor:
    """A function from input rows to model outputs, for any exported artifact.

    Args:
        path: A SavedModel folder, a `.keras`/`.h5` file, or a `.tflite` file.

    Returns:
        `predict(x) -> outputs`, batching internally.

    Raises:
        ExportError: When the artifact cannot be loaded.
    """
    path = Path(path)
    try:
        if path.is_dir():
            fn = _savedmodel_predictor(path)
        elif path.suffix == ".tflite":
            fn = _tflite_predictor(path)
        elif path.suffix in (".keras", ".h5"):
            model = keras.models.load_model(path, compile=False)
            fn = lambda x: model(x, training=False).numpy()  # noqa: E731
        else:
            raise ExportError(f"Unknown artifact type: {path}.")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Reloading {path} failed: {type(exc).__name__}: {exc}") from exc
    return lambda x: _batched(fn, x)


def agreement(task: Task, outputs: np.ndarray, reference: np.ndarray) -> float:
    """The share of rows on which ``outputs`` agree with ``reference``.

    Classification: the predicted class matches. Regression: the output is
    within `REGRESSION_AGREEMENT_RTOL` of the reference outputs' range.
    """
    if len(reference) == 0:
        return 1.0
    if task.is_classification:
        same = predicted_classes(task, outputs) == predicted_classes(task, reference)
        return float(np.mean(same))
    span = float(np.ptp(reference)) or 1.0
    diff = np.abs(outputs.reshape(reference.shape) - reference).reshape(len(reference), -1)
    return float(np.mean(diff.max(axis=1) <= REGRESSION_AGREEMENT_RTOL * span))


def verify_artifacts(
    reference: np.ndarray,
    artifacts: Mapping[str, Path],
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    atol: float,
    rtol: float = 0.0,
    *,
    min_agreement: float = 0.98,
    latency_runs: int = 0,
) -> dict[str, dict[str, Any]]:
    """Reloads each artifact, scores it and checks it answers like the model.

    Float artifacts must match the model's outputs to `atol + rtol *
    |output|` (or, for those in `artifacts.sources`, the outputs of the model
    they were written from); the ones in `artifacts.approximate` (quantized)
    must agree with it on at least `min_agreement` of the rows.

    Args:
        reference: The Keras model's outputs on `x`.
        artifacts: Artifact name to path, as `export_model` returns.
        x: Held-out input rows.
        y: Their labels.
        task: The task, for the metrics.
        atol: Absolute tolerance of each output.
        rtol: Relative tolerance: an output may differ by
            `atol + rtol * |reference|`, as in `numpy.allclose`. Defaults to `0`.
        min_agreement: The smallest agreement allowed for approximate
            artifacts. Defaults to `0.98`.
        latency_runs: Single-example runs timed for each TFLite file; 0
            measures nothing. Defaults to `0`.

    Returns:
        For each artifact, its metrics plus `max_abs_diff`, `agreement` (see
        `agreement`), `bytes` and `gzip_bytes`, and for TFLite files
        `latency_ms` and the `kernels` that ran.

    Raises:
        ExportError: Naming the artifact, when its outputs differ from the
            model's by more than allowed.
    """
    approximate = getattr(artifacts, "approximate", set())
    sources = getattr(artifacts, "sources", {})
    results: dict[str, dict[str, Any]] = {}
    for name, path in artifacts.items():
        path = Path(path)
        outputs = load_predictor(path)(x).reshape(reference.shape)
        expected = reference
        if name in sources and _rows(x):
            expected = np.asarray(sources[name].predict(x, batch_size=512, verbose=0)).reshape(
                reference.shape
            )
        gap = np.abs(outputs - expected)
        diff = float(gap.max()) if _rows(x) else 0.0
        within = bool(np.all(gap <= atol + rtol * np.abs(expected)))
        metrics = compute_metrics(task, y, outputs)
        metrics["max_abs_diff"] = diff
        if task.is_classification or name in approximate:
            metrics["agreement"] = agreement(task, outputs, reference)
        metrics["bytes"], metrics["gzip_bytes"] = artifact_bytes(path)
        if path.suffix == ".tflite" and latency_runs and _rows(x):
            try:
                metrics.update(tflite_latency(path, x, latency_runs))
            except (RuntimeError, ValueError) as exc:
                # The file answered on the whole split above; only a batch of
                # one fails (table models whose TFLite concatenation refuses
                # rank-1 columns at batch 1). Report it, do not fail the run.
                logger.warning(
                    "Single-example latency of %s could not be measured: %s", path.name, exc
                )
                metrics["latency_ms"] = None
                metrics["latency_error"] = f"{type(exc).__name__}: {exc}"
        results[name] = metrics
        if name in approximate:
            if metrics["agreement"] < min_agreement:
                raise ExportError(
                    f"The exported {name} model at {path} does not answer like the trained "
                    f"model: it agrees on {metrics['agreement']:.1%} of {_rows(x)} rows "
                    f"(allowed: export.min_agreement={min_agreement:g}); its outputs differ by "
                    f"up to {diff:.3g}."
                )
            logger.info(
                "Verified %s: agrees on %.1f%% of %d rows (max |difference| %.2g).",
                name,
                100 * metrics["agreement"],
                _rows(x),
                diff,
            )
            continue
        if not within:
            disagree = (
                f"; predicted classes agree on {metrics['agreement']:.1%} of rows"
                if "agreement" in metrics
                else ""
            )
            raise ExportError(
                f"The exported {name} model at {path} does not answer like the trained model: "
                f"outputs differ by up to {diff:.3g} (allowed: export.atol={atol:g} + "
                f"export.rtol={rtol:g} x |output|){disagree}."
            )
        logger.info("Verified %s: max |difference| %.2g over %d rows.", name, diff, _rows(x))
    return results
