"""`fit_pipeline()`: orders the stages, and nothing else.

THIS FILE MUST READ EASILY, TOP TO BOTTOM. Each stage is a plain function in
its own module, with explicit inputs and outputs; this file only calls them
in order, times them, and records what each produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any, Iterator

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig, load_config, save_config
from kerastrain.data.prepare import Prepared, prepare_data
from kerastrain.distribute import make_strategy
from kerastrain.evaluate import compute_metrics
from kerastrain.export import export_model, verify_artifacts
from kerastrain.report import write_report
from kerastrain.runs import RunFolder, write_json
from kerastrain.trial import predict, run_training

logger = logging.getLogger(__name__)

__all__ = ["fit_pipeline", "PipelineResult"]


@dataclasses.dataclass
class PipelineResult:
    """What `fit_pipeline` produced.

    Attributes:
        model: The final tf_keras model.
        history: Each logged quantity over all training epochs.
        metrics: `"val"`, `"test"`, and one entry per exported artifact.
        artifacts: Format name to path.
        best_hyperparameters: The tuned values, or None when nothing was tuned.
        report_path: The run's report.
        config: The resolved configuration (with the seed actually used).
        run_dir: The run folder.
        timings: Seconds spent in each stage.
        stop_reason: Why training stopped.
    """

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, dict[str, Any]]
    artifacts: dict[str, Path]
    best_hyperparameters: dict[str, Any] | None
    report_path: Path
    config: PipelineConfig
    run_dir: Path
    timings: dict[str, float]
    stop_reason: str


class _Stages:
    """Times each stage and logs one line per stage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        logger.info("Stage %s ...", name)
        yield
        self.timings[name] = time.perf_counter() - start
        logger.info("Stage %s done in %.2fs.", name, self.timings[name])


def _resolve(config: Any, **given: Any) -> PipelineConfig:
    cfg = load_config(config, **given)
    if cfg.seed is None:
        cfg = dataclasses.replace(cfg, seed=random.SystemRandom().randrange(2**31))
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name=RunFolder.default_name(cfg.model))
    return cfg


def _evaluate(model: keras.Model, prepared: Prepared) -> dict[str, dict[str, Any]]:
    metrics = {}
    for split in ("val", "test"):
        x, y = prepared.part(split)
        if len(x):
            metrics[split] = compute_metrics(prepared.task, y, predict(model, x))
    return metrics


def _held_out(prepared: Prepared) -> str:
    return "test" if len(prepared.splits.test) else "val" if len(prepared.splits.val) else "train"


def fit_pipeline(data: Any = None, model: Any = None, *, data_options: Any = None,
                 train: Any = None, tune: Any = None, export: Any = None, model_options: Any = None,
                 strategy: Any = None, output_dir: Any = None, overwrite: bool | None = None,
                 seed: int | None = None, name: str | None = None,
                 config: Any = None) -> PipelineResult:
    """From data to a trained, evaluated, exported and verified model.

    Every argument left as `None` takes the config's value, else the
    default named below.

    Args:
        data: `"digits"` (the embedded default), `(x, y)` arrays, a DataFrame
            with `data_options={"target": ...}`, or a `tf.data.Dataset` of
            `(x, y)`. Defaults to the config's, else `"digits"`.
        model: `"auto"`, `"mlp"`, `"cnn"`, a factory callable, or a built
            tf_keras model. Defaults to the config's, else `"auto"`.
        data_options: Mapping or `DataConfig`. Defaults to `None`.
        train: Mapping or `TrainConfig`. Defaults to `None`.
        tune: Mapping or `TuneConfig`: search hyper-parameters first, then
            train with the best values. Defaults to `None` (no search).
        export: Mapping or `ExportConfig`. Defaults to `None`.
        model_options: Keyword options of the model factory. Defaults to `None`.
        strategy: A strategy name or a `tf.distribute.Strategy`.
            Defaults to `"auto"`.
        output_dir: The run folder; rerunning with the same folder after a
            crash resumes training. Defaults to `saved_models/<run name>`.
        overwrite: Replace a finished run in `output_dir`. Defaults to `False`.
        seed: Seed of every random choice. Defaults to a fresh one, recorded.
        name: The run's name. Defaults to `<model>-<timestamp>`.
        config: A `PipelineConfig`, a mapping, or a YAML path; the keyword
            arguments override it (sections key by key). Defaults to `None`.

    Returns:
        A `PipelineResult`.

    Raises:
        ConfigError: For a bad option, before any data is read.
        DataError: For data that cannot be trained on, before training.
        ExportError: When an artifact does not answer like the model.

    Example:
        >>> result = fit_pipeline("digits", train={"epochs": 5})  # doctest: +SKIP
        >>> result.metrics["tflite"]["accuracy"]  # doctest: +SKIP
    """
    cfg = _resolve(config, data=data, model=model, data_options=data_options, train=train,
                   tune=tune, export=export, model_options=model_options, strategy=strategy,
                   output_dir=output_dir, overwrite=overwrite, seed=seed, name=name)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    stage = _Stages()
    run = RunFolder.prepare(cfg.output_dir, cfg.name, cfg.overwrite)
    try:
        save_config(cfg, run.path / "config.yaml")
        with stage("data"):
            prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
        strategy_obj = make_strategy(cfg.strategy)
        tuned = None
        if cfg.tune is not None:
            from kerastrain.tune import tune_stage  # imports KerasTuner only when asked

            with stage("tune"):
                tuned = tune_stage(cfg, prepared, strategy_obj, run.path)
            cfg = tuned.config
        with stage("train"):
            trained, fit = run_training(cfg, prepared, strategy_obj, backup_dir=run.path / "backup")
        with stage("evaluate"):
            metrics = _evaluate(trained, prepared)
        with stage("export"):
            artifacts = export_model(trained, run.path, cfg.export)
        if cfg.export.verify and artifacts:
            with stage("verify"):
                x, y = prepared.part(_held_out(prepared))
                metrics.update(verify_artifacts(predict(trained, x), artifacts, x, y,
                                                prepared.task, cfg.export.atol))
        with stage("report"):
            write_json(run.path / "metrics.json", metrics)
            write_json(run.path / "history.json", fit.history)
            report = write_report(run.path, name=cfg.name, summary=prepared.summary(),
                                  history=fit.history, metrics=metrics, artifacts=artifacts,
                                  timings=stage.timings, stop_reason=fit.stop_reason)
    except BaseException as exc:
        run.mark("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.mark("finished", timings=stage.timings)
    return PipelineResult(model=trained, history=fit.history, metrics=metrics,
                          artifacts=artifacts, report_path=report,
                          best_hyperparameters=tuned.best_values if tuned else None,
                          config=cfg, run_dir=run.path, timings=stage.timings,
                          stop_reason=fit.stop_reason)
