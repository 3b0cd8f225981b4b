"""`fit_pipeline()`: orders the stages, and nothing else.

THIS FILE MUST READ EASILY, TOP TO BOTTOM. Each stage is a plain function in
its own module, with explicit inputs and outputs; this file only calls them
in order, times them, and records what each produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kerastrain._keras import keras, tf
from kerastrain.compress import CompressResult, compress_model, compression_sections
from kerastrain.config import ExportConfig, PipelineConfig, load_config, save_config
from kerastrain.data.audit import DataQuality, audit_data
from kerastrain.data.balance import check_balance_options
from kerastrain.data.corpus import prepare_corpus, windows
from kerastrain.data.feed import InMemory
from kerastrain.data.prepare import Prepared, prepare_data
from kerastrain.data.preprocess import with_target_scale
from kerastrain.distribute import (
    make_strategy,
    process_role,
    recorded_strategy,
    strategy_summary,
    warn_if_unreachable_by_tpu,
)
from kerastrain.errors import ConfigError, message
from kerastrain.evaluation import Evaluation, evaluate_run
from kerastrain.explanation import check_explainable, explain_run
from kerastrain.export import check_onnx_data, export_model, verify_artifacts
from kerastrain.export.language_model import export_language_model, verify_language_model
from kerastrain.export.model_info import write_model_info
from kerastrain.export.text import check_text_export
from kerastrain.export.verify import STREAM_VERIFY_ROWS, verification_sample
from kerastrain.files import write_json
from kerastrain.generation import Generator
from kerastrain.metrics import compute_metrics
from kerastrain.models.lora import merge_lora
from kerastrain.models.text_backbone import text_backbone_section
from kerastrain.report import ReportInputs, Section, write_report
from kerastrain.runs import RunFolder, open_run_folder, run_seed
from kerastrain.synthetic import refuse_source, synthesize_stage, synthetic_section
from kerastrain.threshold import check_threshold
from kerastrain.tracking import track_run, training_callbacks
from kerastrain.training import (
    Decision,
    TrainResult,
    as_float32,
    build_compiled_model,
    describe_decisions,
    find_learning_rate,
    predict_split,
    run_training,
    text_model_sections,
    text_throughput,
)
from kerastrain.training.batch_size import pick_batch_size
from kerastrain.training.finished import (
    discard_finished,
    finished_record,
    record_finished,
    restore_finished,
)
from kerastrain.training.language_model import (
    language_model_defaults,
    language_model_section,
    lm_context,
    score_language_model,
    train_language_model,
)
from kerastrain.training.memory import memory_section
from kerastrain.training.model_parallel import run_model_parallel

if TYPE_CHECKING:  # KerasTuner is imported only when a run tunes
    from kerastrain.tune.search import TuneResult

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
        report_path: The run's report (None on a worker that is not the chief).
        config: The resolved configuration (with the seed actually used).
        run_dir: The run folder.
        timings: Seconds spent in each stage.
        stop_reason: Why training stopped.
        performance: How each `"auto"` speed option (precision, steps per
            execution, XLA, batch size) was resolved, and why; and under
            `"milestones"`, the seconds of training until validation accuracy
            first reached 0.5, 0.8, 0.9, ... (`training.milestones`); for
            text, `"tokens_per_second"` and `"mfu"` (`training.throughput`).
        data_quality: The data audit's findings (`data_options.audit`), or
            None when it was off.
        memory_plan: The memory plan checked before training: estimated
            bytes per device of parameters, gradients, optimizer slots and
            activations, the total, the memory available and its source
            (`kerastrain.training.memory.MemoryPlan.as_dict()`), or None.
        synthetic: The synthetic rows' figures (fidelity, TSTR, diversity,
            memorisation, whether they were used and why), or None when
            `data_options.synthesize` was not set.
        generator: A language model's `kerastrain.generation.Generator`
            (`generate`), else None.
    """

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, dict[str, Any]]
    artifacts: dict[str, Path]
    best_hyperparameters: dict[str, Any] | None
    report_path: Path | None
    config: PipelineConfig
    run_dir: Path
    timings: dict[str, float]
    stop_reason: str
    performance: dict[str, Decision] = dataclasses.field(default_factory=dict)
    data_quality: DataQuality | None = None
    memory_plan: dict[str, Any] | None = None
    synthetic: dict[str, Any] | None = None
    generator: Generator | None = None

    def generate(
        self,
        prompt: str,
        max_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> str:
        """A language model's continuation of ``prompt``: the same text for
        the same seed (`kerastrain.generation.Generator.generate`; a prompt
        longer than the context keeps its last `max_length` tokens, with a
        warning).

        Raises:
            ConfigError: When the run did not train a language model.
        """
        if self.generator is None:
            raise ConfigError(
                message(
                    "generate() needs a language model",
                    received={"model": self.config.model},
                    allowed="Train with model='transformer_lm' on a corpus",
                )
            )
        return self.generator.generate(prompt, max_tokens, temperature, top_k, seed)


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


def fit_pipeline(
    data: Any = None,
    model: Any = None,
    *,
    data_options: Any = None,
    train: Any = None,
    tune: Any = None,
    compress: Any = None,
    export: Any = None,
    evaluate: Any = None,
    model_options: Any = None,
    report: Any = None,
    tracking: Any = None,
    strategy: Any = None,
    distribute: Any = None,
    output_dir: Any = None,
    overwrite: bool | None = None,
    seed: int | None = None,
    name: str | None = None,
    config: Any = None,
) -> PipelineResult:
    """From data to a trained, evaluated, exported and verified model.

    Every argument left as `None` takes the config's value, else the
    default named below.

    Args:
        data: `"digits"` (the embedded default), `(x, y)` arrays, a DataFrame
            or CSV path with `data_options={"target": ...}`, a folder of class
            sub-folders of images, `"tfds:NAME"`, or a `tf.data.Dataset` of
            `(x, y)`; for `model="transformer_lm"`, a corpus: a `.txt` file,
            a folder of them or a list of strings (`kerastrain.data.corpus`).
            Defaults to the config's, else `"digits"`.
        model: `"auto"`, `"mlp"`, `"cnn"`, `"transformer"`,
            `"transformer_lm"` (a language model: its metrics are perplexity
            and bits per byte, and `PipelineResult.generate` writes text), a
            factory callable, or a built tf_keras model. Defaults to the
            config's, else `"auto"`.
        data_options: Mapping or `DataConfig`. Defaults to `None`.
        train: Mapping or `TrainConfig`. Defaults to `None`.
        tune: Mapping or `TuneConfig`: search hyper-parameters first, then
            train with the best values. Defaults to `None` (no search).
        compress: Mapping or `CompressConfig` (prune, quantize, cluster,
            distill, budget). Defaults to `None` (no compression).
        export: Mapping or `ExportConfig`. Defaults to `None`.
        evaluate: Mapping or `EvaluateConfig` (a binary task's decision
            threshold). Defaults to `None`.
        model_options: Keyword options of the model factory. Defaults to `None`.
        report: Mapping or `ReportConfig` (the explanation, the model card's
            text). Defaults to `None`.
        tracking: Mapping or `TrackingConfig` (TensorBoard, MLflow).
            Defaults to `None`.
        strategy: A strategy name, a `tf.distribute.Strategy`, or a
            strategy by kind and options as config.yaml records an object
            (``{"kind": "mirrored", "devices": [...]}``). Defaults to `"auto"`.
        distribute: Mapping or `DistributeConfig`. Defaults to `None`.
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
    given = dict(locals())  # the keyword arguments, which override the config's sections
    cfg = _resolve(given.pop("config"), **given)
    if cfg.model == "transformer_lm":  # its defaults and refusals, before anything runs
        cfg = language_model_defaults(cfg, {**given, "config": config})
    _seed(cfg)
    stage = _Stages()
    strategy_obj = make_strategy(cfg.strategy, cfg.distribute)  # first: it may wait for workers
    warn_if_unreachable_by_tpu(strategy_obj, cfg.output_dir)
    role = process_role(strategy_obj)
    run = open_run_folder(cfg, role)  # a temporary one off the chief
    if cfg.model == "transformer_lm":  # a corpus, next-token prediction: its own stages
        return _language_model(cfg, strategy_obj, run, stage)
    try:
        # A strategy object is recorded by kind and options, so that the file repeats the run.
        save_config(
            cfg.replace(strategy=recorded_strategy(cfg.strategy, strategy_obj)),
            run.path / "config.yaml",
        )
        with stage("data"):
            refuse_source(cfg.data, cfg.data_options)
            prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
            check_explainable(cfg.report.explain, prepared)
            check_onnx_data(cfg.export.formats, prepared)
            check_balance_options(cfg.train.class_weight, cfg.data_options.resample, prepared.task)
            check_threshold(cfg.evaluate.threshold, prepared.task, len(prepared.splits.val))
            check_text_export(cfg.export.formats, cfg.export.tflite_modes, prepared)
        quality = None
        if cfg.data_options.audit:  # before any training: "strict" raises here
            with stage("audit"):
                quality = _audit(cfg, prepared)
        synthetic = None
        if cfg.data_options.synthesize is not None:
            with stage("synthesize"):
                prepared, synthetic = synthesize_stage(prepared, cfg.seed, run.path)
        batch_choice = None
        if cfg.train.batch_size == "auto":
            with stage("batch_size"):
                cfg, batch_choice = _auto_batch_size(cfg, prepared, strategy_obj)
        tuned = None
        if cfg.tune is not None:
            from kerastrain.tune import tune_stage  # imports KerasTuner only when asked

            with stage("tune"):
                tuned = tune_stage(cfg, prepared, strategy_obj, run.path)
            cfg = tuned.config
        with stage("train"):
            cfg, trained, fit = _train(cfg, prepared, strategy_obj, run)
        backbone = text_backbone_section(trained)  # a text transfer model's backbone, trainable
        if batch_choice is not None:
            fit.performance["batch_size"] = batch_choice
        precision_used = getattr(fit.performance.get("mixed_precision"), "value", "float32")
        fit.performance.update(text_throughput(trained, prepared, fit.history, precision_used))
        compressed, export_cfg = None, cfg.export
        if cfg.compress is not None:
            with stage("compress"):
                trained = merge_lora(trained)  # LoRA adapters folded into the kernels
                compressed = compress_model(trained, prepared, cfg, strategy_obj, run_dir=run.path)
            trained, export_cfg = compressed.model, compressed.export
        else:
            trained = with_target_scale(trained, prepared.target_scaler)
        with stage("evaluate"):
            evaluation = evaluate_run(trained, prepared, fit.history, cfg.evaluate.threshold)
            metrics = _split_metrics(trained, prepared, evaluation)
            metrics.update(evaluation.threshold_metrics)  # beside "val" and "test", at 0.5
            metrics.update(compressed.metrics if compressed else {})
        with stage("export"):
            # LoRA adapters folded into the kernels: the files hold a plain model, verified
            # below against the adapted model's answers.
            trained = merge_lora(trained)
            artifacts = _export(trained, prepared, export_cfg, compressed, run, evaluation)
        if export_cfg.verify and artifacts:
            with stage("verify"):
                metrics.update(_verify(evaluation, artifacts, prepared, export_cfg))
        report_path = None
        if role.chief:  # other workers' explanation, report and tracking would be discarded
            with stage("explain"):
                explanations = explain_run(trained, prepared, cfg.report, cfg.seed)
            with stage("report"):
                report_path = _report(
                    run, cfg, prepared, strategy_obj, fit, evaluation, metrics, artifacts,
                    explanations, tuned, compressed, stage.timings, quality, synthetic,
                    [*text_model_sections(trained, prepared, fit.history, fit.performance),
                     *([Section(**backbone)] if backbone else ())],
                )  # fmt: skip
        if role.chief and (cfg.tracking.tensorboard or cfg.tracking.mlflow):
            with stage("track"):
                track_run(
                    cfg.tracking,
                    run.path,
                    name=cfg.name,
                    params=cfg.to_dict(),
                    metrics=metrics,
                    history=fit.history,
                )
    except BaseException as exc:
        run.mark("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.mark("finished", timings=stage.timings)
    if role.chief:
        discard_finished(run.backup_dir)  # a finished run is never resumed
    return PipelineResult(
        model=trained,
        history=fit.history,
        metrics=metrics,
        artifacts=artifacts,
        report_path=report_path,
        best_hyperparameters=tuned.best_values if tuned else None,
        config=cfg,
        run_dir=run.path,
        timings=stage.timings,
        stop_reason=fit.stop_reason,
        performance=fit.performance,
        data_quality=quality,
        memory_plan=fit.memory_plan,
        synthetic=synthetic,
    )


# --------------------------------------------------------------------------- the stages' calls
# Each helper below is one stage's call with the sections it reads; the
# stage itself lives in its own module.


def _resolve(config: Any, **given: Any) -> PipelineConfig:
    """The config with its name and seed decided (a rerun into an unfinished
    run's folder keeps that run's seed: `runs.run_seed`)."""
    cfg = load_config(config, **given)
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name=RunFolder.default_name(cfg.model))
    folder = RunFolder.location(cfg.output_dir, cfg.name)
    return dataclasses.replace(cfg, seed=run_seed(folder, cfg.seed, cfg.train.backup.resume))


def _seed(cfg: PipelineConfig) -> None:
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()


def _audit(cfg: PipelineConfig, prepared: Prepared) -> DataQuality:
    """The data-quality audit of the prepared data, on its splits."""
    return audit_data(
        prepared.x,
        prepared.y,
        prepared.task,
        prepared.splits,
        mode=cfg.data_options.audit,
        seed=cfg.seed,
        table=prepared.table,
        feature_names=prepared.feature_names,
        sample_rows=cfg.data_options.audit_rows,
        tokenizer=cfg.data_options.tokenizer,
    )


def _auto_batch_size(
    cfg: PipelineConfig, prepared: Prepared, strategy: tf.distribute.Strategy
) -> tuple[PipelineConfig, Any]:
    """`train.batch_size="auto"` measured and resolved (with its scaled
    learning rate) in the config; the seeds are set again after the sweep's
    probe model, so the run trains as one given that batch would."""
    train, decision = pick_batch_size(
        cfg.train, prepared, strategy, model_spec=cfg.model, model_options=cfg.model_options,
        distribute=cfg.distribute, seed=cfg.seed,
    )  # fmt: skip
    cfg = dataclasses.replace(
        cfg, train=train, data_options=cfg.data_options.replace(batch_size=train.batch_size)
    )
    _seed(cfg)
    return cfg, decision


def _train(
    cfg: PipelineConfig, prepared: Prepared, strategy: tf.distribute.Strategy, run: RunFolder
) -> tuple[PipelineConfig, keras.Model, TrainResult]:
    """Finds the learning rate when asked (a found rate becomes the run's),
    then trains; the model comes back in float32.

    The chief records the finished fit in the backup folder: a run killed in
    a later stage resumes with the trained weights instead of training again.
    """
    recipe = dict(  # what the training stage reads besides the train section
        model_spec=cfg.model,
        model_options=cfg.model_options,
        batch_size=cfg.batch_size,
        distribute=cfg.distribute,
    )
    train_cfg = find_learning_rate(
        cfg.train, prepared, strategy, **recipe, seed=cfg.seed, run_dir=run.path,
        reuse=run.resuming,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, train=train_cfg)
    record = finished_record(run.backup_dir) if cfg.train.backup.resume else None
    if record is not None:  # killed after training: go on from the trained weights
        trained = as_float32(build_compiled_model(cfg.train, prepared, strategy, **recipe))
        return cfg, trained, restore_finished(record, trained)
    # strategy="model_parallel" trains with the weights split over a mesh (DTensor).
    train_run = run_model_parallel if cfg.strategy_kind == "model_parallel" else run_training
    trained, fit = train_run(
        cfg.train,
        prepared,
        strategy,
        **recipe,
        seed=cfg.seed,
        backup_dir=run.backup_dir,
        callbacks=training_callbacks(cfg.tracking, run.path),
    )
    trained = as_float32(trained)
    if process_role(strategy).chief:
        record_finished(run.backup_dir, trained, fit)
    return cfg, trained, fit


def _split_metrics(
    model: keras.Model, prepared: Prepared, evaluation: Evaluation
) -> dict[str, dict[str, Any]]:
    """Metrics of the validation and test splits; the held-out split the
    evaluation already scored is not predicted twice."""
    memory = InMemory(prepared.x, prepared.y)
    metrics = {}
    for split in ("val", "test"):
        rows = getattr(prepared.splits, split)
        if split == evaluation.split:
            metrics[split] = evaluation.metrics
        elif len(rows):
            metrics[split] = compute_metrics(
                prepared.task, prepared.y[rows], predict_split(model, prepared, split, memory)
            )
    return metrics


def _export(
    model: keras.Model,
    prepared: Prepared,
    export_cfg: ExportConfig,
    compressed: CompressResult | None,
    run: RunFolder,
    evaluation: Evaluation,
) -> dict[str, Path]:
    artifacts = export_model(
        model,
        run.path,
        export_cfg,
        # Read only for an int8 TFLite file: a streamed table's sample costs a
        # pass over its files.
        representative=prepared.sample("train", export_cfg.representative_rows)
        if "tflite" in export_cfg.formats and "int8" in export_cfg.tflite_modes
        else None,
        float_model=compressed.float_model if compressed else None,
    )
    if artifacts:  # what the files answer and take, for `kerastrain predict` and `evaluate`
        write_model_info(
            run.path,
            model.inputs,
            prepared.task,
            target=prepared.options.target,
            columns=prepared.table.sources if prepared.table is not None else None,
            feature_names=prepared.feature_names,
            threshold=evaluation.threshold["value"] if evaluation.threshold else None,
        )
    return artifacts


def _verify(
    evaluation: Evaluation,
    artifacts: dict[str, Path],
    prepared: Prepared,
    export_cfg: ExportConfig,
) -> dict[str, dict[str, Any]]:
    """Every artifact's answers on the held-out split, against the model's
    (on a seeded sample of a split streamed from files: `verification_sample`)."""
    reference, split_rows = evaluation.outputs, None
    rows = getattr(prepared.splits, evaluation.split)
    sample = None
    if getattr(prepared.x, "batched", False):  # read from the files, never whole
        sample = verification_sample(len(rows), STREAM_VERIFY_ROWS)
    if sample is None:
        x, y = prepared.part(evaluation.split)
    else:
        x, y = prepared.rows(rows[sample]), prepared.y[rows[sample]]
        reference, split_rows = reference[sample], len(rows)
    return verify_artifacts(
        reference,
        artifacts,
        x,
        y,
        prepared.task,
        export_cfg.atol,
        export_cfg.rtol,
        min_agreement=export_cfg.min_agreement,
        latency_runs=export_cfg.latency_runs,
        latency_batch=export_cfg.latency_batch,
        split_rows=split_rows,
    )


def _report(
    run: RunFolder,
    cfg: PipelineConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    fit: TrainResult,
    evaluation: Evaluation,
    metrics: dict[str, dict[str, Any]],
    artifacts: dict[str, Path],
    explanations: Any,
    tuned: TuneResult | None,
    compressed: CompressResult | None,
    timings: dict[str, float],
    quality: DataQuality | None = None,
    synthetic: dict[str, Any] | None = None,
    extra: list[Section] | None = None,
) -> Path:
    """metrics.json, history.json and the report with everything the run did
    (``extra``: the sections of a text model)."""
    write_json(run.path / "metrics.json", metrics)
    write_json(run.path / "history.json", fit.history)
    if quality is not None:
        write_json(run.path / "data_quality.json", quality.to_dict())
    return write_report(
        ReportInputs(
            run.path,
            name=cfg.name,
            history=fit.history,
            summary={
                **prepared.summary(),
                **strategy_summary(cfg, strategy),
                **describe_decisions(fit.performance),
            },
            metrics=metrics,
            artifacts=artifacts,
            timings=timings,
            stop_reason=fit.stop_reason,
            config=cfg,
            evaluation=evaluation,
            explanations=explanations,
            intended_use=cfg.report.intended_use,
            limitations=cfg.report.limitations,
            decision_threshold=evaluation.threshold,
            sections=[
                *([Section(**quality.report_section())] if quality else ()),
                *([Section(**tuned.report_section())] if tuned else ()),
                *compression_sections(compressed, metrics, artifacts),
                *([Section(**memory_section(fit.memory_plan))] if fit.memory_plan else ()),
                *([Section(**synthetic_section(synthetic))] if synthetic else ()),
                *(extra or ()),
            ],
        )
    )


def _language_model(
    cfg: PipelineConfig, strategy: tf.distribute.Strategy, run: RunFolder, stage: _Stages
) -> PipelineResult:
    """`model="transformer_lm"`: corpus, training, scoring (perplexity and
    bits per byte), export, parity of next-token logits, report."""
    context = lm_context(cfg.model_options)
    try:
        save_config(cfg.replace(strategy=recorded_strategy(cfg.strategy, strategy)),
                    run.path / "config.yaml")  # fmt: skip
        with stage("data"):
            corpus = prepare_corpus(cfg.data, cfg.data_options, cfg.seed, context)
        with stage("train"):
            trained, fit = train_language_model(
                cfg.train, corpus, strategy, model_options=cfg.model_options,
                batch_size=cfg.batch_size, seed=cfg.seed, backup_dir=run.backup_dir,
                callbacks=training_callbacks(cfg.tracking, run.path),
            )  # fmt: skip
        with stage("evaluate"):
            metrics = {
                s: score_language_model(trained, corpus, s, context) for s in ("val", "test")
            }
            metrics = {split: m for split, m in metrics.items() if m is not None}
        generator = Generator.from_model(trained, corpus.vocabulary, corpus.tokenizer, context)
        with stage("export"):
            artifacts = export_language_model(
                trained, generator.layer, context, run.path, cfg.export
            )
        held_out = "test" if len(corpus.ids["test"]) > 1 else "train"
        if cfg.export.verify:
            with stage("verify"):
                prompts = [corpus.text[held_out][:n] or "a" for n in (1, 7, 3 * context)]
                x = windows(corpus.ids[held_out], context, held_out=True)[0]
                metrics.update(verify_language_model(
                    trained, artifacts, x, prompts, generator, cfg.export))  # fmt: skip
        with stage("report"):
            write_json(run.path / "metrics.json", metrics)
            write_json(run.path / "history.json", fit.history)
            report_path = write_report(ReportInputs(
                run.path, name=cfg.name, history=fit.history, summary=corpus.summary(),
                metrics=metrics, artifacts=artifacts, timings=stage.timings,
                stop_reason=fit.stop_reason, config=cfg,
                sections=[language_model_section(trained, corpus, metrics, fit.history, context)],
            ))  # fmt: skip
    except BaseException as exc:
        run.mark("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.mark("finished", timings=stage.timings)
    discard_finished(run.backup_dir)
    return PipelineResult(
        model=trained, history=fit.history, metrics=metrics, artifacts=artifacts,
        best_hyperparameters=None, report_path=report_path, config=cfg, run_dir=run.path,
        timings=stage.timings, stop_reason=fit.stop_reason, performance=fit.performance,
        generator=generator,
    )  # fmt: skip
