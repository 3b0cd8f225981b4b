"""Experiment tracking: TensorBoard logs and MLflow runs.

TensorBoard: a `TensorBoard` callback writes the training scalars (loss,
metrics, learning rate) each epoch; after the run the final metrics of each
split and artifact are written as scalars too; `log_hparams` writes one
trial's hyper-parameters and score for TensorBoard's HParams view.

MLflow (the optional `mlflow` extra): one MLflow run per kerastrain run, with
the config as params, the history (one step per epoch) and the final metrics
as metrics, and the run folder (report, model card, artifacts) as artifacts.
It goes through an explicit `MlflowClient`, so it neither reads nor changes
MLflow's active run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.callbacks import LearningRateLogger
from kerastrain.config.tracking import MLFLOW_INSTALL, TrackingConfig
from kerastrain.errors import ConfigError, message

logger = logging.getLogger(__name__)

__all__ = [
    "training_callbacks",
    "tensorboard_callback",
    "LearningRateLogger",
    "log_final_scalars",
    "log_hparams",
    "log_mlflow",
    "track_run",
    "flatten_params",
    "scalar_metrics",
    "TENSORBOARD_DIR",
]

TENSORBOARD_DIR = "tensorboard"
#: Run-folder entries never sent to MLflow (the training backup, temporary files).
NOT_LOGGED = ("backup",)
#: MLflow refuses longer param values in older servers.
MAX_PARAM_CHARS = 500
#: MLflow's `log_batch` limits.
BATCH_METRICS, BATCH_PARAMS = 1000, 100


def tensorboard_callback(log_dir: str | os.PathLike) -> keras.callbacks.TensorBoard:
    """A tf_keras `TensorBoard` callback writing epoch scalars (and the
    learning rate) to ``log_dir``, without graphs, histograms or profiling."""
    return keras.callbacks.TensorBoard(
        log_dir=os.fspath(log_dir),
        histogram_freq=0,
        write_graph=False,
        update_freq="epoch",
        profile_batch=0,
    )


def training_callbacks(
    config: TrackingConfig, run_dir: str | os.PathLike
) -> list[keras.callbacks.Callback]:
    """The callbacks the tracking options ask for during training.

    Args:
        config: The tracking options.
        run_dir: The run folder.

    Returns:
        When `config.tensorboard`, a `LearningRateLogger` and a `TensorBoard`
        callback writing to `<run_dir>/tensorboard` (in that order, so the
        learning rate reaches TensorBoard); else nothing.
    """
    if not config.tensorboard:
        return []
    return [LearningRateLogger(), tensorboard_callback(Path(run_dir) / TENSORBOARD_DIR)]


def scalar_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"test/accuracy": 0.97, "tflite/max_abs_diff": 1e-7, ...}``: every
    number of every split and artifact (per-class values and matrices left out)."""
    flat = {}
    for where, values in metrics.items():
        for name, value in (values or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{where}/{name}"] = float(value)
    return flat


def log_final_scalars(log_dir: str | os.PathLike, metrics: Mapping[str, Mapping[str, Any]]) -> Path:
    """Writes the final metrics as TensorBoard scalars under ``log_dir/final``."""
    path = Path(log_dir) / "final"
    writer = tf.summary.create_file_writer(os.fspath(path))
    with writer.as_default():
        for name, value in scalar_metrics(metrics).items():
            tf.summary.scalar(name, value, step=0)
    writer.close()
    return path


def log_hparams(
    log_dir: str | os.PathLike,
    hparams: Mapping[str, Any],
    metrics: Mapping[str, float],
    *,
    trial_id: str | None = None,
    step: int = 0,
) -> Path:
    """Writes one trial's hyper-parameters and scores for TensorBoard's HParams view.

    Call it once per trial, each in its own folder under a common parent, and
    point TensorBoard at the parent.

    Args:
        log_dir: The trial's folder.
        hparams: Hyper-parameter name to value (numbers, strings, booleans).
        metrics: Score name to value (`{"val_accuracy": 0.97}`).
        trial_id: The trial's name in the view. Defaults to `None` (the folder's).
        step: The step the scores are logged at. Defaults to `0`.

    Returns:
        ``log_dir``.

    Example:
        >>> log_hparams(run / "tensorboard" / "hparams" / "trial_03",
        ...             {"learning_rate": 1e-3, "width": 64},
        ...             {"val_accuracy": 0.97})  # doctest: +SKIP
    """
    from tensorboard.plugins.hparams import api as hp

    path = Path(log_dir)
    values = {
        k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()
    }
    writer = tf.summary.create_file_writer(os.fspath(path))
    with writer.as_default():
        hp.hparams(values, trial_id=trial_id or path.name)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=step)
    writer.close()
    return path


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train.epochs": "20", "model": "mlp", ...}`` from a nested config,
    each value cut to `MAX_PARAM_CHARS` characters."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            message(
                "MLflow tracking needs MLflow, which is not installed",
                allowed=f"Install it with: {MLFLOW_INSTALL}",
            )
        ) from None
    return mlflow


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def log_mlflow(
    run_dir: str | os.PathLike,
    *,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, Any]],
    history: Mapping[str, Sequence[float]],
    tracking_uri: str | None = None,
    experiment: str = "kerastrain",
    artifact_location: str | None = None,
    log_artifacts: bool = True,
) -> str:
    """Logs a finished run to MLflow and returns the MLflow run id.

    Args:
        run_dir: The run folder; its files (except the training backup) are
            logged as artifacts.
        name: The run's name.
        params: The config (nested mappings are flattened to dotted names).
        metrics: `"val"`, `"test"` and one entry per artifact; logged as
            `test/accuracy`, `tflite/max_abs_diff`, ...
        history: Logged with the epoch (0-based) as the step.
        tracking_uri: The MLflow store. Defaults to `None` (MLflow's default).
        experiment: The experiment's name, created when missing.
            Defaults to `"kerastrain"`.
        artifact_location: Where a newly created experiment stores artifacts.
            Defaults to `None` (MLflow's default).
        log_artifacts: Upload the run folder. Defaults to `True`.

    Returns:
        The MLflow run id.

    Raises:
        ConfigError: When MLflow is not installed.
    """
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param, RunStatus

    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    run = client.create_run(experiment_id, run_name=name, tags={"kerastrain.run": name})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        entries = [
            Metric(key, float(v), now, step)
            for key, values in history.items()
            for step, v in enumerate(values)
        ]
        entries += [Metric(key, v, now, 0) for key, v in scalar_metrics(metrics).items()]
        for chunk in _chunks(entries, BATCH_METRICS):
            client.log_batch(run_id, metrics=list(chunk))
        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        for chunk in _chunks(flat, BATCH_PARAMS):
            client.log_batch(run_id, params=list(chunk))
        if log_artifacts:
            for entry in sorted(Path(run_dir).iterdir()):
                if entry.name in NOT_LOGGED or entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    client.log_artifacts(run_id, os.fspath(entry), artifact_path=entry.name)
                else:
                    client.log_artifact(run_id, os.fspath(entry))
    except BaseException:
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id)
    logger.info(
        "Logged the run to MLflow: experiment %r, run %s (%s).",
        experiment,
        run_id,
        client.tracking_uri,
    )
    return run_id


def track_run(
    config: TrackingConfig,
    run_dir: str | os.PathLike,
    *,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, Any]],
    history: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    """Sends a finished run where the tracking options say.

    Args:
        config: The tracking options.
        run_dir: The run folder.
        name: The run's name.
        params: The resolved config as a mapping.
        metrics: The run's metrics.
        history: The training history.

    Returns:
        What was logged: `tensorboard` (the log folder) and `mlflow_run_id`,
        each only when asked for.
    """
    logged: dict[str, Any] = {}
    if config.tensorboard:
        log_dir = Path(run_dir) / TENSORBOARD_DIR
        log_final_scalars(log_dir, metrics)
        logged["tensorboard"] = log_dir
    if config.mlflow:
        logged["mlflow_run_id"] = log_mlflow(
            run_dir,
            name=name,
            params=params,
            metrics=metrics,
            history=history,
            tracking_uri=config.mlflow_tracking_uri,
            experiment=config.mlflow_experiment,
            artifact_location=config.mlflow_artifact_location,
        )
    return logged
