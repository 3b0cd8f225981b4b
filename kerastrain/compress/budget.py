"""Compress to a budget: search the techniques that fit a size and an
accuracy drop.

The search is separate from running (KerasTuner's oracle/tuner split):
`candidates` lists the combinations, `estimate_kb` sizes each one cheaply
and `search` runs them. The shipped size of a pruned or clustered int8 file
hardly depends on fine-tuning (the number of zeros and of distinct values is
fixed by construction), so each candidate is first sized with one-shot
magnitude pruning and clustering in NumPy, no training. Only the candidates
that can fit are fine-tuned, largest first; the first one within both limits
wins, so no more accuracy is given up than the budget needs. Every
candidate, tried or skipped, is reported.
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
from kerastrain.compress import cluster as cluster_mod
from kerastrain.compress import prune as prune_mod
from kerastrain.compress.common import Context, original_units, rebuild
from kerastrain.compress.plan import Plan, PlanResult, apply_plan
from kerastrain.config.compress import BudgetConfig, ClusterConfig, PruneConfig
from kerastrain.errors import BudgetNotMet
from kerastrain.export import convert_modes, convert_to_tflite, load_predictor
from kerastrain.metrics import compute_metrics

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "candidates", "estimate_kb", "search", "score_name"]

#: A candidate whose one-shot estimate exceeds the budget by at most this
#: share is still fine-tuned (gzip sizes move a little with the weights).
ESTIMATE_SLACK = 0.05


@dataclasses.dataclass
class Candidate:
    """One combination the budget search considers.

    Attributes:
        plan: The compression steps.
        mode: The TFLite mode (`"float16"` or `"int8"`).
        estimated_kb: gzip KiB of the one-shot (untrained) version.
        size_kb: gzip KiB of the fine-tuned version's TFLite file.
        score: Its validation accuracy (R^2 for regression).
        drop: The baseline's score minus this one's.
        status: `"met"`, why it failed, why it was skipped, or `"not needed"`.
        seconds: Time spent fine-tuning and measuring it.
    """

    plan: Plan
    mode: str
    estimated_kb: float | None = None
    size_kb: float | None = None
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
    """A copy of ``model`` pruned and clustered in one shot, without training:
    the same zeros and distinct values as the fine-tuned result would have."""
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


def estimate_kb(
    model: keras.Model, candidate: Candidate, ctx: Context, representative: np.ndarray
) -> float:
    """The gzip KiB of the candidate's TFLite file, from its one-shot model."""
    shot = one_shot(model, candidate.plan, ctx) if _trains(candidate) else model
    return _gzip_kb(convert_to_tflite(shot, candidate.mode, representative=representative))


def _validation(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    split = "val" if len(ctx.prepared.splits.val) else "train"
    if split == "train":
        logger.warning(
            "No validation split: the budget's accuracy limit is checked on the training rows."
        )
    return ctx.prepared.part(split)


def _best(tried: list[Candidate], budget: BudgetConfig) -> Candidate | None:
    measured = [c for c in tried if c.size_kb is not None]
    accurate = [c for c in measured if c.drop <= budget.max_accuracy_drop]
    if accurate:
        return min(accurate, key=lambda c: c.size_kb)
    small = [c for c in measured if c.size_kb <= budget.max_kb]
    if small:
        return max(small, key=lambda c: c.score)
    return min(measured, key=lambda c: c.size_kb) if measured else None


def _failure(found: list[Candidate], budget: BudgetConfig, baseline: float, name: str) -> str:
    best = _best(found, budget)
    lines = [
        f"No combination met compress.budget (max_kb={budget.max_kb:g}, "
        f"max_accuracy_drop={budget.max_accuracy_drop:g}; baseline validation {name} "
        f"{baseline:.4f})."
    ]
    if best is not None:
        lines.append(
            f"Best found: {best.name} at {best.size_kb:.1f} KiB gzipped, validation "
            f"{name} {best.score:.4f} (drop {best.drop:.4f})."
        )
    else:
        smallest = min(found, key=lambda c: c.estimated_kb)
        lines.append(
            f"No candidate can fit: the smallest, {smallest.name}, is estimated at "
            f"{smallest.estimated_kb:.1f} KiB."
        )
    lines.append(
        "Raise max_kb or max_accuracy_drop, add higher sparsities or fewer clusters, or "
        "choose a smaller model. Candidates:"
    )
    lines += [
        f"  - {c.name}: estimated {c.estimated_kb:.1f} KiB"
        + (f", {c.size_kb:.1f} KiB, {name} {c.score:.4f}" if c.size_kb is not None else "")
        + f" -> {c.status}"
        for c in found
    ]
    return "\n".join(lines)


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
        BudgetNotMet: When none meets both limits; the message lists them all
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
        candidate.estimated_kb = (
            _gzip_kb(plain[candidate.mode])
            if not _trains(candidate)
            else estimate_kb(model, candidate, ctx, representative)
        )
    logger.info(
        "Budget %.1f KiB: one-shot estimates %s.",
        budget.max_kb,
        ", ".join(f"{c.name} {c.estimated_kb:.1f}" for c in found),
    )
    for candidate in sorted(found, key=lambda c: -c.estimated_kb):
        if candidate.estimated_kb > budget.max_kb * (1 + ESTIMATE_SLACK):
            candidate.status = f"skipped: estimated over {budget.max_kb:g} KiB"
            continue
        start = time.perf_counter()
        if _trains(candidate):
            result = apply_plan(model, candidate.plan, ctx)
            content = convert_to_tflite(result.model, candidate.mode, representative=representative)
        else:
            result, content = PlanResult(model=model), plain[candidate.mode]
        candidate.size_kb = _gzip_kb(content)
        candidate.score = tflite_score(content, x_val, y_val, ctx)
        candidate.drop = baseline - candidate.score
        candidate.seconds = time.perf_counter() - start
        too_big = candidate.size_kb > budget.max_kb
        too_bad = candidate.drop > budget.max_accuracy_drop
        candidate.status = (
            "met"
            if not (too_big or too_bad)
            else "; ".join(
                ([f"over {budget.max_kb:g} KiB"] if too_big else [])
                + (
                    [f"{name} drop {candidate.drop:.4f} > {budget.max_accuracy_drop:g}"]
                    if too_bad
                    else []
                )
            )
        )
        logger.info(
            "Budget candidate %s: %.1f KiB, %s %.4f -> %s.",
            candidate.name,
            candidate.size_kb,
            name,
            candidate.score,
            candidate.status,
        )
        if candidate.status == "met":
            return result, candidate, found
    raise BudgetNotMet(_failure(found, budget, baseline, name))
