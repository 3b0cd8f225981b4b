"""Running a chain of compression steps: channels -> prune -> cluster -> quantize.

A `Plan` says which steps run; `apply_plan` runs them in order on a trained
model, each as transform -> fine-tune -> strip, and hands the next step a
plain model. The compress stage runs the plan of the config; the budget
search runs one plan per candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from kerastrain._keras import keras
from kerastrain.compress import channels as channels_mod
from kerastrain.compress import cluster as cluster_mod
from kerastrain.compress import prune as prune_mod
from kerastrain.compress import quantize as quantize_mod
from kerastrain.compress.common import Context, Step
from kerastrain.compress.distill import Distiller, build_student
from kerastrain.config.compress import ClusterConfig, DistillConfig, PruneConfig
from kerastrain.training import as_float32, compile_model, train_model

logger = logging.getLogger(__name__)

__all__ = ["Plan", "PlanResult", "check_plan", "apply_plan", "distill"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which compression steps run.

    Attributes:
        prune: Weight pruning options (magnitude or 2:4), or None.
        cluster: Clustering options, or None.
        quantize: `"qat"` or None.
        quantize_epochs: QAT fine-tuning epochs.
        channels: Channel pruning options (`structure="channels"`), run
            first, or None.
    """

    prune: PruneConfig | None = None
    cluster: ClusterConfig | None = None
    quantize: str | None = None
    quantize_epochs: int = 2
    channels: PruneConfig | None = None

    def describe(self) -> str:
        parts = []
        if self.channels is not None:
            parts.append(f"cut {self.channels.target_ratio:g} of the units")
        if self.prune is not None:
            parts.append(
                "prune 2:4" if self.prune.structure else f"prune {self.prune.target_sparsity:g}"
            )
        if self.cluster is not None:
            parts.append(f"cluster {self.cluster.clusters}")
        if self.quantize:
            parts.append(self.quantize)
        return " + ".join(parts) or "none"


@dataclasses.dataclass
class PlanResult:
    """What a plan produced.

    Attributes:
        model: The model to export: plain (stripped), or quantization-aware.
        float_model: The float twin of a QAT model (for `.keras`/`.h5`), or None.
        steps: One record per step run.
        pruned_layers: The layers pruned.
        sparsity: Layer -> share of zero kernel weights, measured in the final
            model (for a QAT model, in its quantization-aware kernels).
        clustered_layers: The layers clustered.
        unique_values: Clustered layer -> distinct kernel values.
        unquantized: Layers QAT left unquantized (no-op config).
        units: Channel pruning: each Dense/Conv layer -> (units before,
            units after).
        kept_whole: Channel pruning: each Dense/Conv layer none of whose
            units could be removed -> why.
    """

    model: keras.Model
    float_model: keras.Model | None = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    pruned_layers: list[str] = dataclasses.field(default_factory=list)
    sparsity: dict[str, float] = dataclasses.field(default_factory=dict)
    clustered_layers: list[str] = dataclasses.field(default_factory=list)
    unique_values: dict[str, int] = dataclasses.field(default_factory=dict)
    unquantized: list[str] = dataclasses.field(default_factory=list)
    units: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    kept_whole: dict[str, str] = dataclasses.field(default_factory=dict)


def _log_dir(ctx: Context, name: str) -> Any:
    return None if ctx.log_dir is None else ctx.log_dir / name


def check_plan(model: keras.Model, plan: Plan) -> None:
    """Checks the plan's layer selections against ``model`` before anything
    trains (a later step must not fail after an earlier one's fine-tuning).

    Raises:
        ConfigError: For a selection that names unknown or unsupported
            layers, or selects none.
    """
    if plan.channels is not None:
        channels_mod.plan_channels(model, plan.channels)
    if plan.prune is not None:
        prune_mod.prunable_layers(model, plan.prune)
    if plan.cluster is not None:
        cluster_mod.clusterable_layers(model, plan.cluster)


def apply_plan(model: keras.Model, plan: Plan, ctx: Context) -> PlanResult:
    """Runs the plan's steps on a trained model.

    Args:
        model: The trained (or distilled) model; it is not changed. A
            mixed-precision model is compressed as its float32 copy.
        plan: The steps.
        ctx: The run (config, data, strategy).

    Returns:
        The compressed model and what each step did.
    """
    check_plan(model, plan)
    model = as_float32(model)  # TF-MOT's wrappers and TFLite work in float32
    result = PlanResult(model=model)
    current = model
    strategy = ctx.strategy
    if plan.channels is not None:
        current = cut_in_steps(current, plan.channels, ctx, result)
    if plan.prune is not None:
        pruned = prune_mod.prune(current, plan.prune, ctx.steps_per_epoch, strategy)
        result.pruned_layers = prune_mod.prunable_layers(current, plan.prune)
        target = "2:4" if plan.prune.structure else f"{plan.prune.target_sparsity:.0%}"
        result.steps.append(
            ctx.timed_fit(
                "prune",
                pruned,
                epochs=plan.prune.epochs,
                learning_rate=ctx.learning_rate(plan.prune.learning_rate),
                callbacks=prune_mod.pruning_callbacks(_log_dir(ctx, "pruning")),
                detail=f"{target} of {', '.join(result.pruned_layers)}",
            )
        )
        current = prune_mod.strip(pruned, strategy)
        result.sparsity = prune_mod.sparsity_by_layer(current, result.pruned_layers)
        logger.info(
            "Achieved sparsity: %s.", ", ".join(f"{k} {v:.1%}" for k, v in result.sparsity.items())
        )
    if plan.cluster is not None:
        keep_zeros = plan.prune is not None
        clustered = cluster_mod.cluster(
            current, plan.cluster, preserve_sparsity=keep_zeros, strategy=strategy
        )
        result.clustered_layers = cluster_mod.clusterable_layers(current, plan.cluster)
        result.steps.append(
            ctx.timed_fit(
                "cluster",
                clustered,
                epochs=plan.cluster.epochs,
                learning_rate=ctx.learning_rate(plan.cluster.learning_rate),
                callbacks=cluster_mod.clustering_callbacks(_log_dir(ctx, "clustering")),
                detail=f"{plan.cluster.clusters} values ({plan.cluster.init}) in "
                f"{', '.join(result.clustered_layers)}" + (", zeros kept" if keep_zeros else ""),
            )
        )
        current = cluster_mod.strip(clustered, strategy)
        result.unique_values = cluster_mod.unique_values(current, result.clustered_layers)
    if plan.quantize == "qat":
        preserve = (
            ("clusters+sparsity" if plan.prune else "clusters")
            if plan.cluster
            else ("sparsity" if plan.prune else None)
        )
        qat, result.unquantized = quantize_mod.quantize(
            current, preserve=preserve, strategy=strategy
        )
        result.steps.append(
            ctx.timed_fit(
                "qat",
                qat,
                epochs=plan.quantize_epochs,
                learning_rate=ctx.learning_rate(),
                detail="int8 quantization-aware training"
                + (f", preserving {preserve}" if preserve else ""),
            )
        )
        result.float_model = quantize_mod.strip(qat, current, strategy)
        before = result.sparsity
        current = qat
        if before:
            result.sparsity = prune_mod.sparsity_by_layer(qat, list(before))
            lost = {k: v for k, v in result.sparsity.items() if v < before[k] - 0.01}
            if lost:
                logger.warning(
                    "Quantization-aware training reduced the sparsity of %s.",
                    ", ".join(f"{k} ({before[k]:.1%} -> {v:.1%})" for k, v in lost.items()),
                )
    else:
        with strategy.scope():
            compile_model(
                current, ctx.prepared.task, ctx.train_options(), steps_per_epoch=ctx.steps_per_epoch
            )
    result.model = current
    return result


def cut_in_steps(
    model: keras.Model, config: PruneConfig, ctx: Context, result: PlanResult
) -> keras.Model:
    """Channel pruning: cuts on `channels.cut_schedule`, fine-tuning after
    each cut; records the steps, the units and the layers kept whole in
    ``result``.

    Every cut's share is of the original model's groups, so the last one
    leaves exactly ``target_ratio`` of each group removed.

    Returns:
        The smaller, fine-tuned model.
    """
    first = channels_mod.plan_channels(model, config, ratio=0.0)
    before = {name: units for name, (units, _) in first.units.items()}
    current = model
    for ratio, epochs in channels_mod.cut_schedule(config):
        cut = channels_mod.plan_channels(current, config, ratio, first.groups)
        current = channels_mod.cut_channels(current, cut, ctx.strategy)
        result.steps.append(
            ctx.timed_fit(
                "channels",
                current,
                epochs=epochs,
                learning_rate=ctx.learning_rate(config.learning_rate),
                detail=f"{ratio:.0%} of the units cut ({config.criterion}): {cut.describe()}",
            )
        )
    after = channels_mod.units_by_layer(current)
    result.units = {name: (before[name], after[name]) for name in before}
    result.kept_whole = first.kept
    for name, why in first.kept.items():
        logger.info("Channel pruning keeps every unit of %s: %s.", name, why)
    return current


def distill(
    teacher: keras.Model, config: DistillConfig, ctx: Context, student: keras.Model | None = None
) -> tuple[keras.Model, Step]:
    """Trains a student on the labels and ``teacher``'s softened outputs.

    Args:
        teacher: The trained model (or the one `config.teacher` names).
        config: Student options, temperature, alpha, epochs.
        ctx: The run.
        student: The untrained student. Defaults to `None`: built by
            `build_student` from `config.student`.

    Returns:
        The trained, compiled student and the step's record.
    """
    if student is None:
        student = build_student(ctx.config, config, ctx.prepared, ctx.strategy)
    was_trainable = teacher.trainable
    with ctx.strategy.scope():
        distiller = Distiller(
            student, teacher, ctx.prepared.task, config.temperature, config.alpha, name="distiller"
        )
    start = time.perf_counter()
    try:
        options = ctx.train_options(epochs=config.epochs or ctx.config.train.epochs, ema=False)
        with ctx.strategy.scope():
            compile_model(
                distiller, ctx.prepared.task, options, steps_per_epoch=ctx.steps_per_epoch
            )
        train_ds, val_ds = ctx.datasets()
        fit = train_model(distiller, train_ds, val_ds, options)
    finally:
        teacher.trainable = was_trainable
    with ctx.strategy.scope():
        compile_model(
            student, ctx.prepared.task, ctx.train_options(), steps_per_epoch=ctx.steps_per_epoch
        )
    step = Step(
        "distill",
        fit.epochs_run,
        time.perf_counter() - start,
        fit.history,
        f"student of {student.count_params():,} parameters (teacher "
        f"{teacher.count_params():,}), T={config.temperature:g}, alpha={config.alpha:g}",
    )
    logger.info("Distilled: %s.", step.detail)
    return student, step
