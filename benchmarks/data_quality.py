"""The data audit's cost, and what class weights, resampling and a chosen
threshold do on a 1:20 binary set (issue 15).

Audit: a generated table (numeric and categorical columns, some missing
values) is read as `fit_pipeline` reads a DataFrame (`read_table`), then
audited (`audit_data`, default sample size); the table shows both times and
their ratio, and the peak memory over the process's baseline.

Imbalance: a 1:20 binary set (positives shifted by 1.5 standard deviations
in 2 of 4 features), the same MLP, seed and epochs for each of: no
weighting, `class_weight="balanced"`, `resample="oversample"`,
`resample="undersample"`; test balanced accuracy at 0.5, and the validation
F1 at the threshold chosen for F1 on it against 0.5, and the test F1 at that
same threshold against 0.5 (out of sample). Repeated over seeds.

Run: python benchmarks/data_quality.py [--rows 1000000] [--seeds 5] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from _common import peak_rss_mib

from kerastrain._keras import tf
from kerastrain.config import DataConfig, TrainConfig
from kerastrain.data.audit import audit_data
from kerastrain.data.prepare import prepare_data
from kerastrain.data.split import split_indices
from kerastrain.data.tabular import read_table
from kerastrain.metrics import compute_metrics
from kerastrain.task import Task
from kerastrain.threshold import choose_threshold, metrics_at_threshold, positive_scores
from kerastrain.training import predict_split, run_training


def audit_cost(rows: int) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"n{i}": rng.normal(size=rows) for i in range(16)})
    for i in range(4):
        frame[f"c{i}"] = rng.choice(["a", "b", "c", "d", "e"], rows)
    frame.loc[rng.random(rows) < 0.02, "n0"] = np.nan
    frame["label"] = rng.integers(0, 3, rows)
    base = peak_rss_mib()
    start = time.perf_counter()
    options = DataConfig(target="label")
    x, y, table = read_table(frame, options, source="generated")
    read = time.perf_counter() - start
    y = y.astype(np.int64)
    task = Task("multiclass", 3)
    splits = split_indices(y, task, options, 0)
    before = peak_rss_mib()
    start = time.perf_counter()
    quality = audit_data(x, y, task, splits, table=table)
    audit = time.perf_counter() - start
    print(
        f"| {rows:,} x 20 (16 numeric, 4 categorical) | {read:.2f} | {audit:.2f} | "
        f"{audit / read:.2f} | {peak_rss_mib() - before:,.0f} (table read: "
        f"{before - base:,.0f}) | {quality.describe()} |"
    )


def skewed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 1 / 21).astype(np.int64)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[y == 1, :2] += 1.5
    return x, y


def imbalance(seeds: int, epochs: int) -> None:
    variants = {
        "none": ({}, {}),
        "class_weight='balanced'": ({"class_weight": "balanced"}, {}),
        "resample='oversample'": ({}, {"resample": "oversample"}),
        "resample='undersample'": ({}, {"resample": "undersample"}),
    }
    scores: dict[str, list[float]] = {k: [] for k in variants}
    f1: dict[str, list[tuple[float, ...]]] = {k: [] for k in variants}
    for seed in range(seeds):
        x, y = skewed(4200, seed)
        for name, (train, data) in variants.items():
            prepared = prepare_data((x, y), DataConfig(**data), seed)
            cfg = TrainConfig(epochs=epochs, batch_size=64, verbose=0, early_stopping=None, **train)
            model, _ = run_training(
                cfg,
                prepared,
                tf.distribute.get_strategy(),
                model_spec="mlp",
                model_options={"width": 16, "depth": 1},
                batch_size=64,
                seed=seed,
            )
            test = predict_split(model, prepared, "test")
            y_test = prepared.y[prepared.splits.test]
            scores[name].append(compute_metrics(prepared.task, y_test, test)["balanced_accuracy"])
            val = predict_split(model, prepared, "val")
            y_val = prepared.y[prepared.splits.val]
            t = choose_threshold(y_val, positive_scores(val), "f1")
            f1[name].append(
                (
                    metrics_at_threshold(prepared.task, y_val, val, 0.5)["f1"],
                    metrics_at_threshold(prepared.task, y_val, val, t)["f1"],
                    metrics_at_threshold(prepared.task, y_test, test, 0.5)["f1"],
                    metrics_at_threshold(prepared.task, y_test, test, t)["f1"],
                )
            )
    base = statistics.median(scores["none"])
    for name in variants:
        s = scores[name]
        gains = [a - b for a, b in zip(s, scores["none"])]
        half, chosen, test_half, test_chosen = zip(*f1[name])
        better = sum(c > h for h, c in zip(half, chosen))
        test_better = sum(c > h for h, c in zip(test_half, test_chosen))
        print(
            f"| {name} | {statistics.median(s):.3f} ({min(s):.3f}-{max(s):.3f}) | "
            f"{statistics.median(s) - base:+.3f} (min {min(gains):+.3f}) | "
            f"{statistics.median(half):.3f} | {statistics.median(chosen):.3f} "
            f"(better on {better}/{len(chosen)}) | {statistics.median(test_half):.3f} | "
            f"{statistics.median(test_chosen):.3f} (better on {test_better}/{len(chosen)}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print("| table | read s | audit s | audit / read | peak MiB over baseline | audit says |")
    print("|---|---|---|---|---|---|")
    audit_cost(args.rows)
    print()
    print(
        "| weighting | test balanced accuracy (median, range) | vs none (median, worst seed) "
        "| val F1 at 0.5 | val F1 at the chosen threshold | test F1 at 0.5 "
        "| test F1 at the threshold chosen on val |"
    )
    print("|---|---|---|---|---|---|---|")
    imbalance(args.seeds, args.epochs)


if __name__ == "__main__":
    main()
