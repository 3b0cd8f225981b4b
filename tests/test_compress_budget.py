"""Compress to a budget, on scikit-learn's breast cancer data (a tabular MLP)."""

from __future__ import annotations

import gzip
import html
import logging
import re

import numpy as np
import pytest

from kerastrain._keras import tf
from kerastrain.compress import BudgetNotMet
from kerastrain.compress.budget import (
    Candidate,
    _failure,
    _magnitude_prune,
    _one_shot_cluster,
    candidates,
    search,
)
from kerastrain.compress.common import Context
from kerastrain.compress.plan import Plan
from kerastrain.compress.prune import is_2_by_4
from kerastrain.config.compress import BudgetConfig, PruneConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.pipeline import fit_pipeline


def section_rows(report: str, slug: str) -> list[list[str]]:
    """The table of one section of the HTML report, header row first."""
    match = re.search(rf'<section id="{slug}"[^>]*>(.*?)</section>', report, re.S)
    assert match, f"no section {slug!r} in the report"
    return [
        [html.unescape(cell) for cell in re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", match.group(1), re.S)
    ]


@pytest.fixture(scope="module")
def budget_run(breast_cancer_arrays, tmp_path_factory):
    """One fit_pipeline call whose budget only pruning can meet."""
    return fit_pipeline(
        breast_cancer_arrays,
        "mlp",
        seed=0,
        output_dir=str(tmp_path_factory.mktemp("budget")),
        model_options={"width": 64},
        report={"explain": "none"},
        train={"epochs": 4, "verbose": 0, "early_stopping": None},
        compress={
            "budget": {
                "max_kb": 5.0,
                "max_accuracy_drop": 0.03,
                "channel_ratios": [],
                "sparsities": [0.9],
                "clusters": [],
                "structured": False,
            }
        },
        export={"formats": ["tflite"], "tflite": "float32", "latency_runs": 10},
    )


@pytest.mark.slow
def test_the_budget_is_met_by_the_least_compression_that_fits(budget_run):
    result = budget_run
    # The budget chose int8 (the export's own mode was float32) and wrote it.
    assert list(result.artifacts) == ["tflite_int8"]
    path = result.artifacts["tflite_int8"]
    shipped = len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    assert shipped <= 5.0 * 1024
    assert result.metrics["tflite_int8"]["gzip_bytes"] == shipped
    baseline = result.metrics["uncompressed_tflite"]
    assert baseline["gzip_bytes"] > 4 * shipped
    # int8 of a tabular MLP keeps its accuracy: the standardization stays float.
    assert result.metrics["tflite_int8"]["accuracy"] >= baseline["accuracy"] - 0.05
    header, *rows = section_rows(result.report_path.read_text(), "budget-candidates")
    status = {row[0]: row[header.index("status")] for row in rows}
    assert status == {
        "float16": "skipped: estimated over 5 KiB",  # never trained
        "int8": "skipped: estimated over 5 KiB",
        "prune 0.9 + int8": "met",
    }


@pytest.mark.slow
def test_a_budget_that_cannot_be_met_lists_every_candidate(budget_run):
    config = budget_run.config
    prepared = prepare_data(config.data, config.data_options, config.seed)
    ctx = Context.create(config, prepared, tf.distribute.get_strategy())
    budget = BudgetConfig(
        max_kb=0.5,
        channel_ratios=[],
        sparsities=[0.9],
        clusters=[],
        structured=False,
        epochs=1,
    )
    with pytest.raises(BudgetNotMet) as caught:
        search(budget_run.model, budget, ctx, baseline=0.97)
    message = str(caught.value)
    assert "No combination met compress.budget (max_kb=0.5" in message
    assert "No candidate can fit: the most compressed, " in message
    for name in ("float16", "int8", "prune 0.9 + int8"):
        assert f"  - {name}: estimated " in message


def test_the_failure_message_names_the_best_candidate_found():
    budget = BudgetConfig(max_kb=10, max_accuracy_drop=0.01)
    tried = [
        Candidate(Plan(), "int8", estimated_kb=20, status="skipped: estimated over 10 KiB"),
        Candidate(
            Plan(prune=PruneConfig(target_sparsity=0.75)),
            "int8",
            estimated_kb=9.5,
            size_kb=9.6,
            score=0.95,
            drop=0.03,
            status="accuracy drop 0.03 > 0.01",
        ),
        Candidate(
            Plan(prune=PruneConfig(target_sparsity=0.9)),
            "int8",
            estimated_kb=6.0,
            size_kb=6.1,
            score=0.93,
            drop=0.05,
            status="accuracy drop 0.05 > 0.01",
        ),
    ]
    message = _failure(tried, budget, baseline=0.98, name="accuracy")
    # Nothing kept the accuracy: the best is the most accurate within the size.
    assert "Best found: prune 0.75 + int8 at 9.6 KiB gzipped, validation accuracy 0.9500" in message
    assert (
        "  - prune 0.9 + int8: estimated 6.0 KiB, 6.1 KiB, accuracy 0.9300 -> accuracy" in message
    )


def test_candidates_go_from_the_least_to_the_most_compressed():
    names = [
        c.name
        for c in candidates(
            BudgetConfig(
                max_kb=8, channel_ratios=[0.5, 0.25], sparsities=[0.75, 0.5], clusters=[8, 16]
            )
        )
    ]
    assert names == [
        "float16",
        "int8",
        "cut 0.25 of the units + int8",
        "cut 0.5 of the units + int8",
        "prune 2:4 + int8",
        "prune 0.5 + int8",
        "prune 0.75 + int8",
        "prune 0.5 + cluster 16 + int8",
        "prune 0.5 + cluster 8 + int8",
        "prune 0.75 + cluster 16 + int8",
        "prune 0.75 + cluster 8 + int8",
    ]


def test_one_shot_estimates_have_the_zeros_and_values_of_the_real_thing():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 8, 16)).astype(np.float32)
    assert is_2_by_4(_magnitude_prune(kernel, PruneConfig(structure="2:4")))
    pruned = _magnitude_prune(kernel, PruneConfig(target_sparsity=0.75))
    assert np.mean(pruned == 0) == pytest.approx(0.75, abs=0.01)
    clustered = _one_shot_cluster(pruned, 8)
    assert np.all(clustered[pruned == 0] == 0)
    assert np.unique(clustered[clustered != 0]).size <= 8


def test_a_budget_needs_a_size_or_a_latency_limit():
    with pytest.raises(ValueError, match="compress.budget.max_kb.*max_latency_ms"):
        BudgetConfig()
    assert BudgetConfig(max_latency_ms=2.0).max_kb is None
    with pytest.raises(ValueError, match=r"channel_ratios\[0\]"):
        BudgetConfig(max_kb=10, channel_ratios=[1.0])


@pytest.mark.slow
def test_a_latency_budget_is_met_by_cutting_channels(digits_arrays, tmp_path):
    """int8 alone cannot meet the limit (set halfway, in log scale, between
    the int8 file's measured batch latency and its channel-cut twin's); the
    search skips it on its estimate and meets the limit by cutting units."""
    from kerastrain.compress.budget import latency_ms, one_shot
    from kerastrain.export import convert_to_tflite

    trained = fit_pipeline(
        digits_arrays,
        "cnn",
        seed=0,
        output_dir=str(tmp_path),
        model_options={"filters": 64, "dense": 128},
        report={"explain": "none"},
        # an epoch-based schedule with warmup: each candidate's fine-tuning
        # compiles with the steps per epoch it needs (it failed without them)
        train={"epochs": 2, "verbose": 0, "early_stopping": None, "schedule": "auto"},
        export={"formats": ["tflite"], "latency_runs": 0},
    )
    config = trained.config
    prepared = prepare_data(config.data, config.data_options, config.seed)
    ctx = Context.create(config, prepared, tf.distribute.get_strategy())
    x_val, _ = prepared.part("val")
    rep = prepared.sample("train", 100)
    probe = BudgetConfig(max_latency_ms=1.0, latency_batch=256)
    cut = Candidate(Plan(channels=PruneConfig(structure="channels", target_ratio=0.75)), "int8")
    plain_ms = latency_ms(
        convert_to_tflite(trained.model, "int8", representative=rep), x_val, probe
    )
    cut_ms = latency_ms(
        convert_to_tflite(one_shot(trained.model, cut.plan, ctx), "int8", representative=rep),
        x_val,
        probe,
    )
    # a quarter of the units: a quarter of the big convolution's work
    assert cut_ms < 0.6 * plain_ms, (plain_ms, cut_ms)
    limit = float(np.sqrt(plain_ms * cut_ms))
    budget = BudgetConfig(
        max_latency_ms=limit,
        latency_batch=256,
        max_accuracy_drop=1.0,  # this test is about speed; accuracy limits are tested above
        channel_ratios=[0.75],
        sparsities=[],
        clusters=[],
        structured=False,
        epochs=1,
    )
    result, winner, found = search(trained.model, budget, ctx, baseline=0.9)
    status = {c.name: c.status for c in found}
    assert winner.name == "cut 0.75 of the units + int8", [c.row() for c in found]
    assert winner.latency_ms <= limit
    assert status["int8"] == f"skipped: estimated over {limit:g} ms"
    # the winner really is the smaller model, not a masked copy
    assert result.model.count_params() < 0.5 * trained.model.count_params()


@pytest.mark.slow
def test_each_candidate_tried_logs_n_of_the_candidates_that_may_fit_and_the_time_left(
    budget_run, caplog
):
    config = budget_run.config
    prepared = prepare_data(config.data, config.data_options, config.seed)
    ctx = Context.create(config, prepared, tf.distribute.get_strategy())
    budget = BudgetConfig(
        max_kb=5.0,
        max_accuracy_drop=1.0,
        sparsities=[0.9],
        clusters=[],
        structured=False,
        channel_ratios=[],
        epochs=1,
    )
    caplog.set_level(logging.INFO, logger="kerastrain")
    _, winner, found = search(budget_run.model, budget, ctx, baseline=0.97)
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Budget candidate")
    ]
    tried = [c for c in found if c.size_kb is not None]
    may_fit = sum(not c.status.startswith("skipped: estimated") for c in found)
    assert len(lines) == len(tried) >= 1
    for i, (line, candidate) in enumerate(zip(lines, tried), start=1):
        assert line.startswith(f"Budget candidate {i}/{may_fit}: {candidate.name}, "), line
        assert line.endswith(" left."), line
    assert "-> met;" in lines[-1] and winner is tried[-1]
