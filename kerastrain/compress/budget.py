"""Compress to a budget: search the techniques that fit a size, a latency
and an accuracy drop.

The search is separate from running (KerasTuner's oracle/tuner split):
`candidates` lists the combinations, `estimate` sizes and times each one
cheaply and `search` runs them. The shipped size of a pruned or clustered
int8 file hardly depends on fine-tuning (the number of zeros and of distinct
values is fixed by construction), and its latency not at all (a channel cut
fixes the architecture), so each candidate is first measured on a one-shot
version: the units cut, the weights pruned and clustered in NumPy, no
training. Only the candidates that can fit are fine-tuned, least compressed
first; the first one within every limit wins, so no more accuracy is given
up than the budget needs. Every candidate, tried or skipped, is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras
from kerastrain.compress import channels as channels_mod
from kerastrain.compress import cluster as cluster_mod
from kerastrain.compress import prune as prune_mod
from kerastrain.compress.common import Context, original_units, rebuild
from kerastrain.compress.plan import Plan, PlanResult, apply_plan
from kerastrain.config.compress import BudgetConfig, ClusterConfig, PruneConfig
from kerastrain.errors import BudgetNotMet
from kerastrain.export import convert_modes, convert_to_tflite, load_predictor
from kerastrain.export.predictors import tflite_latency
from kerastrain.logs import Progress
from kerastrain.metrics import compute_metrics

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "candidates", "estimate", "search", "score_name"]

#: A candidate whose one-shot estimate exceeds the budget by at most this
#: share is still fine-tuned (gzip sizes move a little with the weights).
ESTIMATE_SLACK = 0.05
#: The same for latency: a fine-tuned file times like its one-shot twin, but
#: two timings of one file differ by a few percent on a busy machine.
LATENCY_SLACK = 0.10
#: Timed calls per latency measurement (at most `LATENCY_SECONDS` of them).
LATENCY_RUNS = 100
LATENCY_SECONDS = 1.0


@dataclasses.dataclass
class Candidate:
    """One combination the budget search considers.

    Attributes:
        plan: The compression steps.
        mode: The TFLite mode (`"float16"` or `"int8"`).
        estimated_kb: gzip KiB of the one-shot (untrained) version.
        estimated_ms: Latency of the one-shot version (with a latency limit).
        size_kb: gzip KiB of the fine-tuned version's TFLite file.
        latency_ms: Latency of the fine-tuned version's TFLite file (with a
            latency limit): the median call on `latency_batch` rows.
        score: Its validation accuracy (R^2 for regression).
        drop: The baseline's score minus this one's.
        status: `"met"`, why it failed, why it was skipped, or `"not needed"`.
        seconds: Time spent fine-tuning and measuring it.
    """

    plan: Plan
    mode: str
    estimated_kb: float | None = None
    estimated_ms: float | None = None
    size_kb: float | None = None
    latency_ms: float | None = None
    score: float | None = None
    drop: float | None = None
    status: str = "not needed"
    seconds: float = 0.0

    @property
    def name(self) -> str:
        steps = self.plan.describe()
        return self.mode if steps == "none" else f"{steps} + {self.mode}"

    def row(self) -> dict[str, Any]:
        """The candidate as a report row."""

        def fmt(value: float | None, digits: int = 1) -> Any:
            return None if value is None else round(value, digits)

        return {
            "candidate": self.name,
            "estimated KiB": fmt(self.estimated_kb),
            "gzip KiB": fmt(self.size_kb),
            "estimated ms": fmt(self.estimated_ms, 4),
            "latency ms": fmt(self.latency_ms, 4),
            "val score": fmt(self.score, 4),
            "drop": fmt(self.drop, 4),
            "status": self.status,
            "seconds": fmt(self.seconds),
        }


def candidates(budget: BudgetConfig) -> list[Candidate]:
    """Every combination the budget allows, least compressed first."""

    def prune(sparsity: float | None = None, structure: str | None = None) -> PruneConfig:
        return PruneConfig(target_sparsity=sparsity, structure=structure, epochs=budget.epochs)

    found = [Candidate(Plan(), "float16"), Candidate(Plan(), "int8")]
    for ratio in sorted(budget.channel_ratios):
        channels = PruneConfig(structure="channels", target_ratio=ratio, epochs=budget.epochs)
        found.append(Candidate(Plan(channels=channels), "int8"))
    if budget.structured:
        found.append(Candidate(Plan(prune=prune(structure="2:4")), "int8"))
    for sparsity in sorted(budget.sparsities):
        found.append(Candidate(Plan(prune=prune(sparsity)), "int8"))
    for sparsity in sorted(budget.sparsities):
        for clusters in sorted(budget.clusters, reverse=True):
            found.append(
                Candidate(
                    Plan(
                        prune=prune(sparsity),
                        cluster=ClusterConfig(clusters=clusters, epochs=budget.epochs),
                    ),
                    "int8",
                )
            )
    return found


def _magnitude_prune(kernel: np.ndarray, config: PruneConfig) -> np.ndarray:
    if config.structure == "2:4":
        rows = np.moveaxis(kernel, -1, 0)
        shape = rows.shape
        rows = rows.reshape(-1, shape[-1])
        pad = -rows.shape[1] % 4
        blocks = np.pad(rows, [(0, 0), (0, pad)]).reshape(rows.shape[0], -1, 4)
        order = np.argsort(np.abs(blocks), axis=-1)
        np.put_along_axis(blocks, order[..., :2], 0.0, axis=-1)
        rows = blocks.reshape(rows.shape[0], -1)[:, : rows.shape[1]]
        return np.moveaxis(rows.reshape(shape), 0, -1)
    threshold = np.quantile(np.abs(kernel), config.target_sparsity)
    return np.where(np.abs(kernel) <= threshold, 0.0, kernel).astype(kernel.dtype)


def _one_shot_cluster(kernel: np.ndarray, clusters: int, iterations: int = 10) -> np.ndarray:
    """Lloyd's k-means on the non-zero values (zeros stay zero)."""
    values = kernel[kernel != 0]
    if values.size <= clusters:
        return kernel
    centroids = np.linspace(values.min(), values.max(), clusters)
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centroids[None]).argmin(axis=1)
        for c in range(clusters):
            if np.any(assign == c):
                centroids[c] = values[assign == c].mean()
    assign = np.abs(kernel.reshape(-1, 1) - centroids[None]).argmin(axis=1)
    out = centroids[assign].reshape(kernel.shape).astype(kernel.dtype)
    return np.where(kernel == 0, 0.0, out).astype(kernel.dtype)


def one_shot(model: keras.Model, plan: Plan, ctx: Context) -> keras.Model:
    """A copy of ``model`` cut, pruned and clustered in one shot, without
    training: the same architecture, zeros and distinct values as the
    fine-tuned result would have."""
    if plan.channels is not None:
        cut = channels_mod.plan_channels(model, plan.channels)
        model = channels_mod.cut_channels(model, cut, ctx.strategy)
    copy = rebuild(model, ctx.strategy)
    if plan.prune is not None:
        for name in prune_mod.prunable_layers(model, plan.prune):
            layer = copy.get_layer(name)
            layer.kernel.assign(_magnitude_prune(layer.kernel.numpy(), plan.prune))
    if plan.cluster is not None:
        for name in cluster_mod.clusterable_layers(model, plan.cluster):
            layer = copy.get_layer(name)
            layer.kernel.assign(_one_shot_cluster(layer.kernel.numpy(), plan.cluster.clusters))
    return copy


def _gzip_kb(content: bytes) -> float:
    import gzip

    return len(gzip.compress(content, compresslevel=9, mtime=0)) / 1024


def score_name(ctx: Context) -> str:
    """The metric the accuracy limit applies to: accuracy, or R^2."""
    return "accuracy" if ctx.prepared.task.is_classification else "r2"


def tflite_score(content: bytes, x: np.ndarray, y: np.ndarray, ctx: Context) -> float:
    """The validation score of a TFLite file's content."""
    with tempfile.TemporaryDirectory(prefix="kerastrain-budget-") as folder:
        path = Path(folder) / "candidate.tflite"
        path.write_bytes(content)
        outputs = original_units(ctx.prepared, load_predictor(path)(x))
    return float(compute_metrics(ctx.prepared.task, y, outputs)[score_name(ctx)])


def _trains(candidate: Candidate) -> bool:
    return candidate.plan.describe() != "none"


def latency_ms(content: bytes, x: np.ndarray, budget: BudgetConfig) -> float:
    """The median latency of a TFLite file's content on `budget.latency_batch`
    rows of `x` (the interpreter on one thread)."""
    with tempfile.TemporaryDirectory(prefix="kerastrain-budget-") as folder:
        path = Path(folder) / "candidate.tflite"
        path.write_bytes(content)
        timed = tflite_latency(
            path, x, LATENCY_RUNS, warmup=5, batch=budget.latency_batch, max_seconds=LATENCY_SECONDS
        )
    return timed.get("batch_latency_ms", timed["latency_ms"])


def estimate(
    model: keras.Model,
    candidate: Candidate,
    ctx: Context,
    representative: np.ndarray,
    budget: BudgetConfig,
    x: np.ndarray,
    content: bytes | None = None,
) -> None:
    """Sets the candidate's `estimated_kb` (and `estimated_ms` with a latency
    limit) from its one-shot model's TFLite file (or `content`, the file of a
    candidate that does not train)."""
    if content is None:
        shot = one_shot(model, candidate.plan, ctx) if _trains(candidate) else model
        content = convert_to_tflite(shot, candidate.mode, representative=representative)
    candidate.estimated_kb = _gzip_kb(content)
    if budget.max_latency_ms is not None:
        candidate.estimated_ms = latency_ms(content, x, budget)


def _over(candidate: Candidate, budget: BudgetConfig) -> str | None:
    """Why the one-shot estimate cannot fit, or None."""
    if budget.max_kb is not None and candidate.estimated_kb > budget.max_kb * (1 + ESTIMATE_SLACK):
        return f"skipped: estimated over {budget.max_kb:g} KiB"
    limit = budget.max_latency_ms
    if limit is not None and candidate.estimated_ms > limit * (1 + LATENCY_SLACK):
        return f"skipped: estimated over {limit:g} ms"
    return None


def _limits(budget: BudgetConfig) -> str:
    parts = [f"max_kb={budget.max_kb:g}"] if budget.max_kb is not None else []
    if budget.max_latency_ms is not None:
        parts.append(
            f"max_latency_ms={budget.max_latency_ms:g} on {budget.latency_batch} "
            f"row{'s' if budget.latency_batch > 1 else ''}"
        )
    return ", ".join([*parts, f"max_accuracy_drop={budget.max_accuracy_drop:g}"])


def _validation(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    split = "val" if len(ctx.prepared.splits.val) else "train"
    if split == "train":
        logger.warning(
            "No validation split: the budget's accuracy limit is checked on the training rows."
        )
    return ctx.prepared.part(split)


def _best(tried: list[Candidate], budget: BudgetConfig) -> Candidate | None:
    measured = [c for c in tried if c.size_kb is not None]

    def cost(c: Candidate) -> float:
        return c.size_kb if budget.max_kb is not None else c.latency_ms

    def fits(c: Candidate) -> bool:
        small = budget.max_kb is None or c.size_kb <= budget.max_kb
        fast = budget.max_latency_ms is None or c.latency_ms <= budget.max_latency_ms
        return small and fast

    accurate = [c for c in measured if c.drop <= budget.max_accuracy_drop]
    if accurate:
        return min(accurate, key=cost)
    fitting = [c for c in measured if fits(c)]
    if fitting:
        return max(fitting, key=lambda c: c.score)
    return min(measured, key=cost) if measured else None


def _measured(c: Candidate, name: str) -> str:
    if c.size_kb is None:
        return ""
    timed = f", {c.latency_ms:.3g} ms" if c.latency_ms is not None else ""
    return f", {c.size_kb:.1f} KiB{timed}, {name} {c.score:.4f}"


def _estimated(c: Candidate) -> str:
    timed = f", {c.estimated_ms:.3g} ms" if c.estimated_ms is not None else ""
    return f"estimated {c.estimated_kb:.1f} KiB{timed}"


def _failure(found: list[Candidate], budget: BudgetConfig, baseline: float, name: str) -> str:
    best = _best(found, budget)
    lines = [
        f"No combination met compress.budget ({_limits(budget)}; baseline validation {name} "
        f"{baseline:.4f})."
    ]
    if best is not None:
        timed = f", {best.latency_ms:.3g} ms" if best.latency_ms is not None else ""
        lines.append(
            f"Best found: {best.name} at {best.size_kb:.1f} KiB gzipped{timed}, validation "
            f"{name} {best.score:.4f} (drop {best.drop:.4f})."
        )
    else:
        smallest = min(found, key=lambda c: (c.estimated_ms or 0.0, c.estimated_kb))
        lines.append(
            f"No candidate can fit: the most compressed, {smallest.name}, is "
            f"{_estimated(smallest)}."
        )
    lines.append(
        "Raise the limits, add higher sparsities, channel ratios or fewer clusters, or "
        "choose a smaller model. Candidates:"
    )
    lines += [f"  - {c.name}: {_estimated(c)}{_measured(c, name)} -> {c.status}" for c in found]
    return "\n".join(lines)


def _status(candidate: Candidate, budget: BudgetConfig, name: str) -> str:
    faults = []
    if budget.max_kb is not None and candidate.size_kb > budget.max_kb:
        faults.append(f"over {budget.max_kb:g} KiB")
    if budget.max_latency_ms is not None and candidate.latency_ms > budget.max_latency_ms:
        faults.append(f"{candidate.latency_ms:.3g} ms > {budget.max_latency_ms:g} ms")
    if candidate.drop > budget.max_accuracy_drop:
        faults.append(f"{name} drop {candidate.drop:.4f} > {budget.max_accuracy_drop:g}")
    return "; ".join(faults) or "met"


def search(
    model: keras.Model, budget: BudgetConfig, ctx: Context, baseline: float
) -> tuple[PlanResult, Candidate, list[Candidate]]:
    """Finds the least compression that meets the budget.

    Args:
        model: The trained float model.
        budget: The limits and the candidates' options.
        ctx: The run.
        baseline: The uncompressed float32 TFLite file's validation score.

    Returns:
        The winner's plan result, the winner, and every candidate.

    Raises:
        BudgetNotMet: When none meets every limit; the message lists them all
            and the best found.
    """
    representative = ctx.prepared.sample("train", ctx.config.export.representative_rows)
    x_val, y_val = _validation(ctx)
    name = score_name(ctx)
    found = candidates(budget)
    # Candidates without a step are the model itself: converted once, exactly.
    plain = convert_modes(
        model, [c.mode for c in found if not _trains(c)], representative=representative
    )
    for candidate in found:
        content = None if _trains(candidate) else plain[candidate.mode]
        estimate(model, candidate, ctx, representative, budget, x_val, content)
    logger.info(
        "Budget %s: one-shot estimates %s.",
        _limits(budget),
        "; ".join(f"{c.name} {_estimated(c)}" for c in found),
    )
    # Least compressed first: the largest (or, with only a latency limit, slowest).
    order = sorted(
        found,
        key=lambda c: -c.estimated_kb if budget.max_kb is not None else -c.estimated_ms,
    )
    # The search stops at the first candidate that meets the budget: the time
    # left is for trying every candidate that may fit, an upper bound.
    progress = Progress(
        logger, "Budget candidate", sum(not _over(c, budget) for c in found), every=0
    )
    tried = 0
    for candidate in order:
        skipped = _over(candidate, budget)
        if skipped:
            candidate.status = skipped
            continue
        start = time.perf_counter()
        if _trains(candidate):
            result = apply_plan(model, candidate.plan, ctx)
            content = convert_to_tflite(result.model, candidate.mode, representative=representative)
            if budget.max_latency_ms is not None:
                candidate.latency_ms = latency_ms(content, x_val, budget)
        else:
            result, content = PlanResult(model=model), plain[candidate.mode]
            candidate.latency_ms = candidate.estimated_ms  # the same file, already timed
        candidate.size_kb = _gzip_kb(content)
        candidate.score = tflite_score(content, x_val, y_val, ctx)
        candidate.drop = baseline - candidate.score
        candidate.seconds = time.perf_counter() - start
        candidate.status = _status(candidate, budget, name)
        tried += 1
        progress.update(
            tried,
            f"{candidate.name}, {candidate.size_kb:.1f} KiB"
            + (f", {candidate.latency_ms:.3g} ms" if candidate.latency_ms is not None else "")
            + f", {name} {candidate.score:.4f} -> {candidate.status}",
        )
        if candidate.status == "met":
            return result, candidate, found
    raise BudgetNotMet(_failure(found, budget, baseline, name))
