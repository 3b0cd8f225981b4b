"""Verification: each artifact reloaded, run on held-out rows and compared with
the Keras model's outputs, both in batches and one row at a time.

Float artifacts must match to `atol` (plus `rtol` of each output);
quantized ones must predict the same on a share of the rows. Every artifact
must also answer a single row (the usual case on a device) the way it
answers that row inside a batch. TFLite files run with the interpreter's
default settings, as a user's `Interpreter(model_path=...)` does (XNNPACK
on). Each artifact's raw and gzip size, and its single-example latency, are
measured on the way.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain import logs
from kerastrain.batching import batches, num_rows, predict_batched, take
from kerastrain.errors import ExportError
from kerastrain.export.predictors import TFLiteRunner, load_predictor, tflite_latency
from kerastrain.export.writing import artifact_bytes
from kerastrain.metrics import agreement, compute_metrics
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "verify_artifacts",
    "verification_sample",
    "ONE_ROW_CHECKS",
    "LATENCY_BUDGET_S",
    "STREAM_VERIFY_ROWS",
]

#: Held-out rows each artifact answers one at a time.
ONE_ROW_CHECKS = 8
#: Seconds of timed single-row calls per SavedModel or Keras artifact at most
#: (at least 5 calls): an eager call of a large model can take long.
LATENCY_BUDGET_S = 2.0
#: Held-out rows each artifact answers a call at a time; a split of many
#: batches logs its progress with the time left.
VERIFY_BATCH = 512
#: Held-out rows of a table streamed from its files that verification reads
#: at most (a seeded sample, read from the files): the whole split would be
#: held in memory as Python objects, millions of rows of a large table.
STREAM_VERIFY_ROWS = 20_000
#: The kernels a user's `Interpreter(model_path=...)` runs.
_DEFAULT_KERNELS = "default delegates (XNNPACK)"


def verification_sample(rows: int, limit: int, seed: int = 0) -> np.ndarray | None:
    """Positions (sorted) of a seeded sample of ``limit`` of ``rows`` held-out
    rows, or None when there are no more than ``limit``: then all are checked.

    Example:
        >>> verification_sample(10, 3, seed=0).tolist()  # doctest: +SKIP
        [2, 6, 8]
    """
    if rows <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def _predictor(path: Path) -> tuple[Callable[[Any], np.ndarray], TFLiteRunner | None]:
    """The artifact as a function of rows, and for a TFLite file the runner,
    whose `kernels` say whether the default delegates had to be given up."""
    if path.suffix != ".tflite":
        return load_predictor(path, trust=True), None  # this run's own artifact
    try:
        runner = TFLiteRunner(path)
    except Exception as exc:
        raise ExportError(f"Reloading {path} failed: {type(exc).__name__}: {exc}") from exc
    return (lambda x: predict_batched(runner, x)), runner


def _answers(name: str, predict: Callable[[Any], np.ndarray], x: Any) -> np.ndarray:
    """The artifact's outputs on the held-out rows, `VERIFY_BATCH` rows a call,
    with a progress line every few seconds on a large split."""
    rows = num_rows(x)
    progress = logs.Progress(
        logger,
        f"Verifying {name}: batch",
        math.ceil(rows / VERIFY_BATCH),
        every=logs.PROGRESS_SECONDS,
    )
    outputs = []
    for done, batch in enumerate(batches(x, VERIFY_BATCH), start=1):
        outputs.append(np.asarray(predict(batch)))
        progress.update(done)
    return np.concatenate(outputs) if outputs else np.asarray(predict(take(x, 0, 0)))


def _check_default_kernels(name: str, path: Path, runners: list[TFLiteRunner | None]) -> None:
    """A TFLite file that ran only once the default delegates were given up
    fails for a user, whose `Interpreter(model_path=...)` keeps them."""
    if any(r is not None and r.kernels != _DEFAULT_KERNELS for r in runners):
        raise ExportError(
            f"The exported {name} model at {path} fails with the TFLite interpreter's default "
            "settings (XNNPACK); only its built-in kernels ran it (the warning above gives the "
            "interpreter's error), so a user's `Interpreter(model_path=...)` would fail."
        )


def _one_row_answers(
    name: str, path: Path, predict: Callable[[Any], np.ndarray], x: Any, rows: int
) -> np.ndarray:
    """The answers to the first `rows` rows, each asked alone."""
    answers = []
    for i in range(rows):
        try:
            answers.append(np.asarray(predict(take(x, i, i + 1))))
        except Exception as exc:
            raise ExportError(
                f"The exported {name} model at {path} cannot answer a single row (it answered "
                f"the split in batches): {type(exc).__name__}: {exc}"
            ) from exc
    return np.concatenate(answers)


def _time_one_row(predict: Callable[[Any], np.ndarray], row: Any, runs: int) -> dict[str, Any]:
    """Median and 90th percentile of one-row calls, within `LATENCY_BUDGET_S`."""
    for _ in range(3):  # the first calls trace and allocate
        predict(row)
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < runs and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - start)
    return {
        "latency_ms": 1e3 * statistics.median(times),
        "latency_p90_ms": 1e3 * float(np.percentile(times, 90)),
        "latency_runs": len(times),
    }


def _latency(
    name: str, path: Path, predict: Callable[[Any], np.ndarray], x: Any, runs: int, batch: int
) -> dict[str, Any]:
    """Single-example latency: a TFLite file in the interpreter on one thread
    (`tflite_latency`, which also times a call on `batch` rows), any other
    artifact called the way `load_predictor` calls it (a SavedModel's serving
    signature, a Keras model eagerly)."""
    try:
        if path.suffix == ".tflite":
            timed = tflite_latency(path, x, runs, batch=batch, max_seconds=LATENCY_BUDGET_S)
            return {**timed, "latency_runs": runs}
        return _time_one_row(predict, take(x, 0, 1), runs)
    except Exception as exc:  # it answered one row above: anything here is a real fault
        raise ExportError(
            f"The single-example latency of the exported {name} model at {path} could not be "
            f"measured: {type(exc).__name__}: {exc}"
        ) from exc


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
    latency_batch: int = 1,
    split_rows: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Reloads each artifact, scores it and checks it answers like the model.

    Each artifact answers the held-out rows in batches (up to 512 rows a
    call), then its first `ONE_ROW_CHECKS` rows one at a time. Float
    artifacts must match the model's outputs to `atol + rtol * |output|`
    both ways (or, for those in `artifacts.sources`, the outputs of the
    model they were written from); the ones in `artifacts.approximate`
    (quantized) must agree with it on at least `min_agreement` of the rows,
    and answer a row alone as they answer it in a batch (to the same
    tolerance). TFLite files must run with the interpreter's default
    settings (XNNPACK), not only with its built-in kernels.

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
        latency_runs: Single-example runs timed for each artifact; 0
            measures nothing. Defaults to `0`.
        latency_batch: Rows of the batch call also timed for each TFLite
            file (`batch_latency_ms`, `batch_rows`); `1` times single
            examples only. Defaults to `1`.
        split_rows: The rows of the held-out split when `x` is a sample of
            them (`verification_sample`): each artifact's metrics then say
            `verified_rows` of `split_rows`, and so does the log. Defaults
            to `None` (`x` is the whole split).

    Returns:
        For each artifact, its metrics plus `max_abs_diff`, `agreement` (see
        `agreement`), `bytes`, `gzip_bytes`, `one_row_checked` (rows asked
        alone), for TFLite files the `kernels` that ran, and with
        `latency_runs` its `latency_ms`, `latency_p90_ms` and
        `latency_runs` (the runs timed), and with `split_rows` the
        `verified_rows` and `split_rows`. Without held-out rows nothing is
        run: `latency_ms` is `None` and `latency_note` says why.

    Raises:
        ExportError: Naming the artifact, when its outputs differ from the
            model's by more than allowed, when it cannot answer a single row
            or answers it differently alone, when a TFLite file fails with
            the default interpreter settings, or when its latency cannot be
            measured.
    """
    approximate = getattr(artifacts, "approximate", set())
    sources = getattr(artifacts, "sources", {})
    results: dict[str, dict[str, Any]] = {}
    rows = num_rows(x)
    if split_rows is not None:
        logger.info(
            "Verifying the artifacts on a seeded sample of %d of the %d held-out rows (metrics "
            "of the artifacts are on the sample).",
            rows,
            split_rows,
        )
    for name, path in artifacts.items():
        path = Path(path)
        predict, runner = _predictor(path)
        outputs = _answers(name, predict, x).reshape(reference.shape)
        _check_default_kernels(name, path, [runner])
        expected = reference
        if name in sources and rows:
            expected = np.asarray(sources[name].predict(x, batch_size=512, verbose=0)).reshape(
                reference.shape
            )
        metrics = _batch_check(
            name, path, outputs, expected, reference, y, task, atol, rtol, name in approximate
        )
        if name in approximate and metrics["agreement"] < min_agreement:
            raise ExportError(
                f"The exported {name} model at {path} does not answer like the trained "
                f"model: it agrees on {metrics['agreement']:.1%} of {rows} rows "
                f"(allowed: export.min_agreement={min_agreement:g}); its outputs differ by "
                f"up to {metrics['max_abs_diff']:.3g}."
            )
        metrics["bytes"], metrics["gzip_bytes"] = artifact_bytes(path)
        single = min(rows, ONE_ROW_CHECKS)
        runners = [runner]
        if runner is not None:
            # A TFLite file opened afresh, its first call one row: once resized
            # for a batch, an interpreter answers one row even where a user's
            # (at the file's stored size) fails.
            predict, fresh = _predictor(path)
            runners.append(fresh)
        alone = _one_row_answers(name, path, predict, x, single).reshape(
            (single, *reference.shape[1:])
        )
        # A float artifact answers like the model; a quantized one like itself in a batch.
        target = outputs[:single] if name in approximate else expected[:single]
        gap = np.abs(alone - target)
        if not np.all(gap <= atol + rtol * np.abs(target)):
            raise ExportError(
                f"The exported {name} model at {path} answers a single row differently from "
                f"{'its answer in a batch' if name in approximate else 'the trained model'}: "
                f"by up to {float(gap.max()):.3g} over {single} rows asked alone (allowed: "
                f"export.atol={atol:g} + export.rtol={rtol:g} x |output|)."
            )
        metrics["one_row_checked"] = single
        if split_rows is not None:
            metrics["verified_rows"], metrics["split_rows"] = rows, split_rows
        _check_default_kernels(name, path, runners)
        if runner is not None:
            metrics["kernels"] = runner.kernels
        if latency_runs and rows:
            metrics.update(_latency(name, path, predict, x, latency_runs, latency_batch))
        elif latency_runs:
            metrics["latency_ms"] = None
            metrics["latency_note"] = "not measured: no held-out rows to time"
        results[name] = metrics
        if name in approximate:
            logger.info(
                "Verified %s: agrees on %.1f%% of %d rows (max |difference| %.2g); answers "
                "%d rows alone as in a batch.",
                name,
                100 * metrics["agreement"],
                rows,
                metrics["max_abs_diff"],
                single,
            )
        else:
            logger.info(
                "Verified %s: max |difference| %.2g over %d rows in batches and %d alone.",
                name,
                metrics["max_abs_diff"],
                rows,
                single,
            )
    return results


def _batch_check(
    name: str,
    path: Path,
    outputs: np.ndarray,
    expected: np.ndarray,
    reference: np.ndarray,
    y: np.ndarray,
    task: Task,
    atol: float,
    rtol: float,
    approximate: bool,
) -> dict[str, Any]:
    """The artifact's metrics on the split answered in batches; a float
    artifact further than `atol + rtol * |expected|` fails."""
    rows = len(outputs)
    gap = np.abs(outputs - expected)
    metrics = compute_metrics(task, y, outputs)
    metrics["max_abs_diff"] = float(gap.max()) if rows else 0.0
    if task.is_classification or approximate:
        metrics["agreement"] = agreement(task, outputs, reference)
    if not approximate and not np.all(gap <= atol + rtol * np.abs(expected)):
        disagree = (
            f"; predicted classes agree on {metrics['agreement']:.1%} of rows"
            if "agreement" in metrics
            else ""
        )
        raise ExportError(
            f"The exported {name} model at {path} does not answer like the trained model: "
            f"outputs differ by up to {metrics['max_abs_diff']:.3g} (allowed: "
            f"export.atol={atol:g} + export.rtol={rtol:g} x |output|){disagree}."
        )
    return metrics
