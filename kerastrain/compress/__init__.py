"""The compress stage: from the trained float model to a small one.

`compress_model` is the one call the pipeline makes. It measures the
uncompressed model's float32 TFLite file (the baseline every ratio is taken
against), then runs, as the config asks: distillation into a smaller student,
then either the chosen techniques (channel pruning, which rebuilds a smaller
model, then prune -> cluster -> quantization-aware training, each transform
-> fine-tune -> strip with TF-MOT) or the budget search that chooses them. Post-training quantization happens in the export
(`export.tflite`). `compression_sections` turns the result and the verified
artifacts into the report's sections.

Each technique is also usable alone, as a model -> model transform with its
inverse, like TF-MOT's own API: `channels.cut_channels` (with
`channels.zero_channels`, the same cut as a mask), `prune.prune`/`prune.strip`,
`cluster.cluster`/`cluster.strip`, `quantize.quantize`/`quantize.strip`,
and `distill.Distiller`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.compress.budget import Candidate, score_name, search
from kerastrain.compress.common import Context, Step, original_units
from kerastrain.compress.distill import build_student
from kerastrain.compress.plan import Plan, PlanResult, apply_plan, check_plan, distill
from kerastrain.config import ExportConfig, PipelineConfig
from kerastrain.data.prepare import Prepared
from kerastrain.data.preprocess import with_target_scale
from kerastrain.distribute import uses_coordinator
from kerastrain.errors import BudgetNotMet, ConfigError, message
from kerastrain.export import artifact_bytes, convert_to_tflite, load_predictor, tflite_latency
from kerastrain.files import write_json
from kerastrain.metrics import compute_metrics
from kerastrain.report import Section
from kerastrain.training import as_float32
from kerastrain.training.flops import forward_flops

logger = logging.getLogger(__name__)

__all__ = ["compress_model", "CompressResult", "compression_sections", "BudgetNotMet"]


@dataclasses.dataclass
class CompressResult:
    """What the compress stage produced.

    Attributes:
        model: The model to export: stripped of every wrapper, or
            quantization-aware (its SavedModel reloads with no scopes); for
            regression, it answers in the original target units.
        float_model: A quantization-aware model's float twin, which the
            export writes to `.keras`/`.h5`; None otherwise.
        export: The export options to use (the budget sets the TFLite mode).
        steps: Each step run (distill, prune, cluster, qat).
        plan: The plan's detailed result (layers, sparsity, unquantized).
        baseline: The uncompressed model's float32 TFLite file: `bytes`,
            `gzip_bytes`, `latency_ms`, `batch_latency_ms`, its metrics on the
            held-out split, and the model's `params` and `flops` (forward
            FLOPs per example).
        params: The compressed model's parameter count.
        flops: The compressed model's forward FLOPs per example.
        candidates: The budget search's candidates (empty without a budget).
        chosen: The budget's winner, or None.
    """

    model: keras.Model
    float_model: keras.Model | None
    export: ExportConfig
    steps: list[Step]
    plan: PlanResult
    baseline: dict[str, Any]
    params: int | None = None
    flops: int | None = None
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    chosen: str | None = None

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """The baseline as an entry of the run's metrics."""
        return {"uncompressed_tflite": self.baseline}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account of the stage (written to `compression.json`)."""
        plan = self.plan
        return {
            "steps": [s.summary() for s in self.steps],
            "units": plan.units,
            "kept_whole": plan.kept_whole,
            "pruned_layers": plan.pruned_layers,
            "sparsity": plan.sparsity,
            "clustered_layers": plan.clustered_layers,
            "unique_values": plan.unique_values,
            "unquantized_layers": plan.unquantized,
            "baseline": self.baseline,
            "params": self.params,
            "flops": self.flops,
            "tflite": self.export.tflite,
            "budget_choice": self.chosen,
            "budget_candidates": [c.row() for c in self.candidates],
        }


def _held_out(prepared: Prepared) -> str:
    return "test" if len(prepared.splits.test) else "val" if len(prepared.splits.val) else "train"


def measure_baseline(model: keras.Model, ctx: Context) -> dict[str, Any]:
    """Sizes, latency and scores of the uncompressed model's float32 TFLite.

    Args:
        model: The trained float model (on standardized targets for
            regression; scores are taken in the original units).
        ctx: The run.

    Returns:
        `bytes`, `gzip_bytes`, `latency_ms` and `batch_latency_ms` (unless
        `export.latency_runs` is 0), the held-out split's metrics and
        `split`, `val_score` (the budget's reference), and the model's
        `params` and `flops` per example.
    """
    prepared = ctx.prepared
    content = convert_to_tflite(model)
    with tempfile.TemporaryDirectory(prefix="kerastrain-baseline-") as folder:
        path = Path(folder) / "baseline.tflite"
        path.write_bytes(content)
        predictor = load_predictor(path)

        def outputs(rows: Any) -> Any:
            return original_units(prepared, predictor(rows))

        split = _held_out(prepared)
        x, y = prepared.part(split)
        result: dict[str, Any] = dict(compute_metrics(prepared.task, y, outputs(x)))
        result.pop("confusion_matrix", None)
        result["split"] = split
        x_val, y_val = prepared.part("val" if len(prepared.splits.val) else "train")
        result["val_score"] = float(
            compute_metrics(prepared.task, y_val, outputs(x_val))[score_name(ctx)]
        )
        result["bytes"], result["gzip_bytes"] = artifact_bytes(path)
        export = ctx.config.export
        if export.latency_runs and len(y):
            result.update(tflite_latency(path, x, export.latency_runs, batch=export.latency_batch))
    result["params"], result["flops"] = model.count_params(), forward_flops(model)
    logger.info(
        "Baseline float32 TFLite: %.1f KiB (%.1f KiB gzipped).",
        result["bytes"] / 1024,
        result["gzip_bytes"] / 1024,
    )
    return result


def compress_model(
    model: keras.Model,
    prepared: Prepared,
    config: PipelineConfig,
    strategy: tf.distribute.Strategy,
    *,
    run_dir: str | Path | None = None,
) -> CompressResult:
    """Compresses a trained model as ``config.compress`` asks.

    Args:
        model: The trained float tf_keras model (not changed).
        prepared: The prepared data; fine-tuning uses its training split,
            the budget its validation split.
        config: The resolved run config (`compress`, `train`, `export`).
        strategy: The strategy every model is rebuilt and fine-tuned under.
        run_dir: Where `compression.json` (and TF-MOT summaries, when asked)
            are written. Defaults to `None` (nothing written).

    Returns:
        The model to export (in the original target units, like every model
        the pipeline exports) and what each step did.

    Raises:
        ConfigError: For a layer selection the model does not fit, or a bad
            student option, before any compression training.
        BudgetNotMet: When no candidate meets `compress.budget`.

    Example:
        >>> result = compress_model(trained, prepared, load_config(  # doctest: +SKIP
        ...     compress={"prune": {"target_sparsity": 0.8}}), strategy)
        >>> result.plan.sparsity  # doctest: +SKIP
        {'conv_1': 0.8, 'dense': 0.8}
    """
    options = config.compress
    if options is None:
        raise ConfigError(
            message(
                "compress_model needs a compress section",
                received={"config.compress": options},
                allowed="Set config.compress; the pipeline skips the stage when it is None",
            )
        )
    if uses_coordinator(strategy):
        raise ConfigError(
            message(
                "compress is not available under a ParameterServerStrategy: TF-MOT's wrappers "
                "fine-tune through model.fit on replicas, which a parameter-server coordinator "
                "does not run",
                received={"strategy": type(strategy).__name__},
                allowed="Compress with strategy='multi_worker', 'mirrored' or one device",
            )
        )
    run_dir = Path(run_dir) if run_dir is not None else None
    log_dir = run_dir / "logs" if options.summaries and run_dir is not None else None
    ctx = Context.create(config, prepared, strategy, log_dir)
    plan = Plan(
        channels=options.channel_pruning,
        prune=options.weight_pruning,
        cluster=options.cluster,
        quantize=options.quantize,
        quantize_epochs=options.quantize_epochs,
    )
    student = None
    if options.distill is not None:  # built first, so that a bad option fails before training
        ensure_tf_keras(options.distill.teacher or model, "compress.distill.teacher")
        student = build_student(config, options.distill, prepared, strategy)
    check_plan(student if student is not None else model, plan)
    model = as_float32(model)
    baseline = measure_baseline(model, ctx)
    steps: list[Step] = []
    if options.distill is not None:
        model, step = distill(options.distill.teacher or model, options.distill, ctx, student)
        steps.append(step)
    export = config.export
    candidates: list[Candidate] = []
    chosen = None
    if options.budget is not None:
        result, winner, candidates = search(model, options.budget, ctx, baseline["val_score"])
        export = export.replace(tflite=winner.mode)
        chosen = winner.name
        logger.info("Budget met by %s (%.1f KiB gzipped).", winner.name, winner.size_kb)
    else:
        result = apply_plan(model, plan, ctx)
    steps += result.steps
    scaler = prepared.target_scaler
    plain = result.float_model or result.model  # a QAT model's float twin has its shapes
    twin = result.float_model and with_target_scale(result.float_model, scaler)
    compressed = CompressResult(
        model=with_target_scale(result.model, scaler),
        float_model=twin,
        export=export,
        steps=steps,
        plan=result,
        baseline=baseline,
        params=plain.count_params(),
        flops=forward_flops(plain),
        candidates=candidates,
        chosen=chosen,
    )
    if run_dir is not None:
        write_json(run_dir / "compression.json", compressed.summary())
    return compressed


def _ratio(base: Mapping[str, Any], values: Mapping[str, Any]) -> float | None:
    if not values.get("gzip_bytes"):
        return None
    return round(base["gzip_bytes"] / values["gzip_bytes"], 2)


def _row(
    name: str, values: Mapping[str, Any], base: Mapping[str, Any], score: str, model: Mapping
) -> dict:
    def ms(key: str) -> float | None:
        value = values.get(key)
        return None if value is None else round(value, 4)

    return {
        "artifact": name,
        "params": model.get("params"),
        "FLOPs/example": model.get("flops"),
        "bytes": values.get("bytes"),
        "gzip bytes": values.get("gzip_bytes"),
        "x smaller (gzip)": _ratio(base, values),
        score: values.get(score),
        "agreement": values.get("agreement"),
        "latency ms": ms("latency_ms"),
        "batch latency ms": ms("batch_latency_ms"),
    }


def compression_sections(
    compressed: CompressResult | None,
    metrics: Mapping[str, Mapping[str, Any]],
    artifacts: Mapping[str, Any],
) -> list[Section]:
    """The report's compression sections (none when nothing was compressed).

    "Compression": each verified artifact against the uncompressed float32
    TFLite baseline (parameters, FLOPs per example, raw and gzip bytes,
    ratio, score, agreement with the Keras model, single-example and batch
    latency). "Compressed layers": sparsity,
    distinct values and quantization of each touched layer. "Compression
    steps", and "Budget candidates" when a budget was searched.

    Args:
        compressed: The stage's result, or None.
        metrics: The run's metrics, with an entry per verified artifact.
        artifacts: Artifact name -> path.

    Returns:
        `kerastrain.report.Section`s for `write_report(sections=...)`.
    """
    if compressed is None:
        return []
    base = compressed.baseline
    score = "accuracy" if "accuracy" in base else "r2"
    shape = {"params": compressed.params, "flops": compressed.flops}
    rows = [_row("uncompressed float32 TFLite (baseline)", base, base, score, base)]
    rows += [
        _row(name, metrics[name], base, score, shape)
        for name in artifacts
        if "gzip_bytes" in metrics.get(name, {})
    ]
    batch = base.get("batch_rows")
    sections = [
        Section(
            "Compression",
            rows=rows,
            text=(
                f"Each exported artifact against the float32 TFLite file of the uncompressed model. "
                f"gzip bytes are the size that ships; {score} is on the {base['split']} split; "
                "agreement is the share of rows on which the artifact predicts like the compressed "
                "Keras model; latency is the median single-example time in the LiteRT interpreter "
                f"(one thread, {base.get('kernels', 'default kernels')})"
                + (f", batch latency the median call on {batch} rows" if batch else "")
                + ". Parameters and FLOPs per example (forward, 2 per multiply-add) are the "
                "model's: channel pruning lowers them; magnitude pruning and clustering keep "
                "them (their zeros and shared values are still stored and multiplied)."
            ),
        )
    ]
    plan = compressed.plan
    layers = list(dict.fromkeys([*plan.pruned_layers, *plan.clustered_layers, *plan.unquantized]))
    if layers:
        sections.append(
            Section(
                "Compressed layers",
                rows=[
                    {
                        "layer": name,
                        "sparsity": plan.sparsity.get(name),
                        "distinct values": plan.unique_values.get(name),
                        "quantized": (
                            "no (left in float)"
                            if name in plan.unquantized
                            else "QAT"
                            if compressed.float_model is not None
                            else ""
                        ),
                    }
                    for name in layers
                ],
                text=(
                    "Sparsity is measured in the exported weights of each pruned layer (for a "
                    "quantization-aware model, in its kernels after QAT). Layers left in float: the "
                    "input standardization, and layers TF-MOT cannot quantize (no-op QuantizeConfig)."
                ),
            )
        )
    if compressed.steps:
        sections.append(Section("Compression steps", rows=[s.summary() for s in compressed.steps]))
    if compressed.candidates:
        sections.append(
            Section(
                "Budget candidates",
                rows=[c.row() for c in compressed.candidates],
                text=f"The budget search chose {compressed.chosen}.",
            )
        )
    return sections
