"""Export: SavedModel, .keras, h5 and TFLite, written atomically, then verified.

Every artifact is written under a temporary name in its final folder and
renamed into place, so an interrupted run never leaves a half-written file
where a finished one is expected. Verification reloads each artifact the way
a user would (``tf.saved_model.load``, ``tf_keras.models.load_model``, the
LiteRT interpreter), runs it on held-out rows and compares its outputs with
the Keras model's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import ExportConfig
from kerastrain.data.validate import Task
from kerastrain.errors import ExportError
from kerastrain.evaluate import compute_metrics, predicted_classes

logger = logging.getLogger(__name__)

__all__ = ["atomic_path", "export_model", "load_predictor", "verify_artifacts", "FILENAMES"]

#: Where each format is written inside the run folder.
FILENAMES = {"savedmodel": "savedmodel", "keras": "model.keras", "h5": "model.h5",
             "tflite": "model.tflite"}

Predictor = Callable[[np.ndarray], np.ndarray]


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it into place on success.

    The temporary name keeps the final name's suffix (tf_keras picks the save
    format from it). An existing file or folder at ``final`` is replaced only
    once the new one is complete; on an exception the temporary is removed
    and ``final`` is left as it was.

    Example:
        >>> with atomic_path(tmp_dir / "a.txt") as p:  # doctest: +SKIP
        ...     p.write_text("done")
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise ExportError(f"Nothing was written for {final}.")
        old = None
        if final.exists():
            old = final.with_name(f".old-{uuid.uuid4().hex[:8]}-{final.name}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _save_savedmodel(model: keras.Model, path: Path) -> None:
    # tf_keras writes a `serving_default` signature named after the Input and
    # output layers, which TFLite conversion and TF Serving both use.
    model.save(path, save_format="tf", include_optimizer=False)


def _convert_tflite(savedmodel_dir: Path, mode: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
    if mode != "float32":
        raise ExportError(f"Unknown TFLite mode {mode!r}.")
    return converter.convert()


def export_model(model: keras.Model, run_dir: str | os.PathLike,
                 config: ExportConfig) -> dict[str, Path]:
    """Writes ``model`` in every format of ``config.formats``.

    Args:
        model: The trained tf_keras model (compression wrappers stripped).
        run_dir: The folder the artifacts go into.
        config: `formats` and the TFLite mode.

    Returns:
        Each format's name mapped to the path written.

    Raises:
        ExportError: When a format cannot be written; what was there before
            is kept.
    """
    run_dir = Path(run_dir)
    artifacts: dict[str, Path] = {}
    savedmodel_dir: Path | None = None
    scratch = None
    try:
        for fmt in config.formats:
            final = run_dir / FILENAMES[fmt]
            try:
                if fmt == "savedmodel":
                    with atomic_path(final) as tmp:
                        _save_savedmodel(model, tmp)
                    savedmodel_dir = final
                elif fmt in ("keras", "h5"):
                    with atomic_path(final) as tmp:
                        model.save(tmp, save_format=fmt if fmt == "h5" else None)
                elif fmt == "tflite":
                    if savedmodel_dir is None:
                        scratch = Path(tempfile.mkdtemp(prefix="kerastrain-export-"))
                        savedmodel_dir = scratch / "savedmodel"
                        _save_savedmodel(model, savedmodel_dir)
                    content = _convert_tflite(savedmodel_dir, config.tflite)
                    with atomic_path(final) as tmp:
                        tmp.write_bytes(content)
            except ExportError:
                raise
            except Exception as exc:  # a converter or saver failure, named
                raise ExportError(f"Exporting the model as {fmt!r} to {final} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
            artifacts[fmt] = final
            logger.info("Exported %s: %s (%s).", fmt, final, _size(final))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return artifacts


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size
    return f"{total / 1024:.1f} KiB"


def _rows(x: Any) -> int:
    """Rows of an array or of a dict of columns (a table)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _batched(fn: Callable[[Any], np.ndarray], x: Any, batch: int = 512) -> np.ndarray:
    take = (lambda i: {k: v[i:i + batch] for k, v in x.items()}) if isinstance(x, dict) \
        else (lambda i: x[i:i + batch])
    return np.concatenate([np.asarray(fn(take(i))) for i in range(0, _rows(x), batch)])


def _savedmodel_predictor(path: Path) -> Predictor:
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    (output,) = signature.structured_outputs

    def predict(x: Any) -> np.ndarray:
        given = x if isinstance(x, dict) else {next(iter(specs)): x}
        return signature(**{name: tf.convert_to_tensor(_plain(given[name]), spec.dtype)
                            for name, spec in specs.items()})[output].numpy()
    return predict


def _plain(column: Any) -> Any:
    """Object arrays of text as str arrays, which TensorFlow converts."""
    return column.astype(str) if getattr(column, "dtype", None) == object else column


def _tflite_predictor(path: Path) -> Predictor:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def runner(resolver: Any) -> Any:
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
        return interpreter.get_signature_runner("serving_default")

    state = {"run": runner(OpResolverType.AUTO), "fallback": False}
    details = state["run"].get_input_details()

    def feed(x: Any) -> dict[str, np.ndarray]:
        given = x if isinstance(x, dict) else {next(iter(details)): x}
        return {name: np.char.encode(_plain(given[name]), "utf-8")
                if detail["dtype"] == np.bytes_ else np.asarray(given[name], detail["dtype"])
                for name, detail in details.items()}

    def predict(x: Any) -> np.ndarray:
        inputs = feed(x)
        try:
            out = state["run"](**inputs)
        except RuntimeError as exc:
            if state["fallback"]:
                raise
            # XNNPACK refuses some models (sparse weight tensors); the built-in
            # kernels run them.
            logger.warning("TFLite default delegates failed on %s (%s); using the built-in "
                           "kernels.", path.name, exc)
            state["run"] = runner(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            state["fallback"] = True
            out = state["run"](**inputs)
        (value,) = out.values()
        return value
    return predict


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


def verify_artifacts(reference: np.ndarray, artifacts: Mapping[str, Path], x: np.ndarray,
                     y: np.ndarray, task: Task, atol: float,
                     rtol: float = 0.0) -> dict[str, dict[str, Any]]:
    """Reloads each artifact, scores it and checks it answers like the model.

    Args:
        reference: The Keras model's outputs on `x`.
        artifacts: Format name to path, as `export_model` returns.
        x: Held-out input rows.
        y: Their labels.
        task: The task, for the metrics.
        atol: Absolute tolerance of each output.
        rtol: Relative tolerance: an output may differ by
            `atol + rtol * |reference|`, as in `numpy.allclose`. Defaults to `0`.

    Returns:
        For each format, its metrics plus `max_abs_diff` and (classification)
        `agreement`, the share of rows whose predicted class matches.

    Raises:
        ExportError: Naming the artifact, when its outputs differ from the
            model's by more than the tolerance.
    """
    results: dict[str, dict[str, Any]] = {}
    for fmt, path in artifacts.items():
        outputs = load_predictor(path)(x).reshape(reference.shape)
        gap = np.abs(outputs - reference)
        diff = float(gap.max()) if _rows(x) else 0.0
        within = bool(np.all(gap <= atol + rtol * np.abs(reference)))
        metrics = compute_metrics(task, y, outputs)
        metrics["max_abs_diff"] = diff
        if task.is_classification and _rows(x):
            metrics["agreement"] = float(np.mean(
                predicted_classes(task, outputs) == predicted_classes(task, reference)))
        results[fmt] = metrics
        if not within:
            disagree = f"; predicted classes agree on {metrics['agreement']:.1%} of rows" \
                if "agreement" in metrics else ""
            raise ExportError(
                f"The exported {fmt} model at {path} does not answer like the trained model: "
                f"outputs differ by up to {diff:.3g} (allowed: export.atol={atol:g} + "
                f"export.rtol={rtol:g} x |output|){disagree}.")
        logger.info("Verified %s: max |difference| %.2g over %d rows.", fmt, diff, _rows(x))
    return results
