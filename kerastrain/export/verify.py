"""Verification: each artifact reloaded, run on held-out rows and compared with
the Keras model's outputs.

Float artifacts must match to `atol` (plus `rtol` of each output);
quantized ones must predict the same on a share of the rows. Each
artifact's raw and gzip size, and each TFLite file's single-example
latency, are measured on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.batching import num_rows
from kerastrain.errors import ExportError
from kerastrain.export.predictors import load_predictor, tflite_latency
from kerastrain.export.writing import artifact_bytes
from kerastrain.metrics import agreement, compute_metrics
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = ["verify_artifacts"]


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
        outputs = load_predictor(path, trust=True)(x).reshape(reference.shape)  # this run's own
        expected = reference
        if name in sources and num_rows(x):
            expected = np.asarray(sources[name].predict(x, batch_size=512, verbose=0)).reshape(
                reference.shape
            )
        gap = np.abs(outputs - expected)
        diff = float(gap.max()) if num_rows(x) else 0.0
        within = bool(np.all(gap <= atol + rtol * np.abs(expected)))
        metrics = compute_metrics(task, y, outputs)
        metrics["max_abs_diff"] = diff
        if task.is_classification or name in approximate:
            metrics["agreement"] = agreement(task, outputs, reference)
        metrics["bytes"], metrics["gzip_bytes"] = artifact_bytes(path)
        if path.suffix == ".tflite" and latency_runs and num_rows(x):
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
                    f"model: it agrees on {metrics['agreement']:.1%} of {num_rows(x)} rows "
                    f"(allowed: export.min_agreement={min_agreement:g}); its outputs differ by "
                    f"up to {diff:.3g}."
                )
            logger.info(
                "Verified %s: agrees on %.1f%% of %d rows (max |difference| %.2g).",
                name,
                100 * metrics["agreement"],
                num_rows(x),
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
        logger.info("Verified %s: max |difference| %.2g over %d rows.", name, diff, num_rows(x))
    return results
