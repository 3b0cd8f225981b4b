"""Compression: gzip TFLite size and accuracy against the float32 baseline,
and int8 vs float32 single-example latency.

Each row is one `fit_pipeline` call: it trains the model, measures the
float32 TFLite file of the uncompressed model (the baseline), compresses,
exports and verifies. The size is the gzip-compressed TFLite file (the size
that ships); accuracy is on the test split, for the baseline and the
compressed file, from the same call; latency is the median of single-example
runs in the LiteRT interpreter on one thread.

Goals (issue 7): at least 12x smaller with at most 1 point of test accuracy
lost; int8 at least 4x smaller than float32 and not slower per example.

Channel pruning (issue 19): half the units of every hidden layer removed, then
int8, on the digits CNN and a residual network: the raw `.tflite` at least 6x
smaller than the float32 baseline, int8 batch latency at least 2x lower, at
most 1 point of test accuracy lost. The batch latency is the median time of
one 256-row batch (the test rows) in the interpreter on one thread, the
compressed int8 file interleaved with a float32 file of the uncompressed
architecture (converted from the factory's model: a dense float32 model's
time depends on its shapes, not its values; its size is checked against the
run's baseline file).

Run: python benchmarks/compression.py [--datasets digits,breast_cancer] [--seed 0]
     python benchmarks/compression.py --datasets digits,digits_resnet \
         --configs "channels 0.5 + int8"
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from _common import interleave, peak_rss_mib

import kerastrain  # noqa: E402
from kerastrain.data.prepare import prepare_data  # noqa: E402
from kerastrain.export import convert_to_tflite, tflite_latency  # noqa: E402
from kerastrain.export.predictors import TFLiteRunner  # noqa: E402
from kerastrain.models import MODELS  # noqa: E402
from kerastrain.training import as_float32  # noqa: E402

#: Channel pruning to half of every hidden layer's units (the first
#: convolution too), in cuts over the first 8 of 16 fine-tuning epochs.
CHANNELS = {
    "structure": "channels",
    "target_ratio": 0.5,
    "epochs": 16,
    "skip_first_conv": False,
}

#: Each configuration: the compress options and the TFLite modes. The last
#: one is the goal's: prune to 90% (12 epochs: 6 of ramp, 6 of recovery),
#: cluster the survivors into 8 values (zeros kept), then int8.
CONFIGS = {
    "int8 (post-training)": ({}, ["float32", "int8"]),
    "prune 0.8 + int8": ({"prune": {"target_sparsity": 0.8, "epochs": 4}}, ["int8"]),
    "prune 0.8 + PQAT int8": (
        {"prune": {"target_sparsity": 0.8, "epochs": 4}, "quantize": "qat", "quantize_epochs": 2},
        ["int8"],
    ),
    "prune 0.8 + cluster 16 + int8": (
        {"prune": {"target_sparsity": 0.8, "epochs": 4}, "cluster": {"clusters": 16, "epochs": 2}},
        ["int8"],
    ),
    "prune 0.9 + int8": ({"prune": {"target_sparsity": 0.9, "epochs": 8}}, ["int8"]),
    "prune 0.9 + cluster 8 + int8": (
        {"prune": {"target_sparsity": 0.9, "epochs": 12}, "cluster": {"clusters": 8, "epochs": 2}},
        ["int8"],
    ),
    "channels 0.5 + int8": ({"prune": CHANNELS}, ["int8"]),
    "channels 0.5 + prune 0.8 + cluster 16 + int8": (
        {
            "prune": [CHANNELS, {"target_sparsity": 0.8, "epochs": 4}],
            "cluster": {"clusters": 16, "epochs": 2},
        },
        ["int8"],
    ),
}

#: Each data set: the data, the model, its options and the test split.
DATASETS = {
    "digits": ("digits", "cnn", {}, 0.15),
    "breast_cancer": ("breast_cancer", "mlp", {}, 0.3),
    "digits_resnet": ("digits", "resnet", {}, 0.15),
}

#: Rows of the batch whose latency is measured.
BATCH = 256


def batch_latency(
    paths: dict[str, str], rows: np.ndarray, repeats: int = 7, runs: int = 50
) -> dict[str, float]:
    """Each file's median time for one batch of ``BATCH`` rows (one thread),
    the files interleaved A, B, B, A, ...: the median over repeats."""
    runners = {name: TFLiteRunner(Path(path), num_threads=1) for name, path in paths.items()}
    inputs = {name: r.feed(rows[:BATCH]) for name, r in runners.items()}
    for name, runner in runners.items():
        for _ in range(5):
            runner.invoke(inputs[name])

    def timed(name: str) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            runners[name].invoke(inputs[name])
            times.append(time.perf_counter() - start)
        return 1e3 * float(np.median(times))

    results = interleave({name: (lambda _, n=name: timed(n)) for name in paths}, repeats)
    return {name: float(np.median(values)) for name, values in results.items()}


def ab_latency(
    artifacts: dict, rows: np.ndarray, repeats: int = 7, runs: int = 500
) -> dict[str, float]:
    """float32 vs int8 file of the same model, interleaved A, B, B, A, ...:
    the median over repeats of each repeat's median single-example time."""
    sides = {
        name: (lambda _, path=artifacts[name]: tflite_latency(path, rows, runs)["latency_ms"])
        for name in ("tflite", "tflite_int8")
    }
    results = interleave(sides, repeats)
    return {name: float(np.median(values)) for name, values in results.items()}


def run(dataset: str, config: str, seed: int, epochs: int) -> dict:
    data, model, options, test_split = DATASETS[dataset]
    compress, modes = CONFIGS[config]
    start = time.perf_counter()
    trained = []

    def factory(inputs, head, **opts):  # keeps the architecture the run trains
        trained.append(MODELS[model](inputs, head, **opts))
        return trained[-1]

    with tempfile.TemporaryDirectory() as folder:
        result = kerastrain.fit_pipeline(
            data,
            factory,
            model_options=options,
            seed=seed,
            output_dir=folder,
            data_options={"test_split": test_split},
            train={"epochs": epochs, "verbose": 0, "early_stopping": 5},
            compress=compress,
            report={"explain": "none"},
            export={"formats": ["tflite"], "tflite": modes, "latency_runs": 1000},
        )
        rows = prepare_data(data, result.config.data_options, seed).part("test")[0]
        ab = ab_latency(result.artifacts, rows) if "tflite" in result.artifacts else None
        baseline_file = Path(folder) / "uncompressed.tflite"
        baseline_file.write_bytes(convert_to_tflite(as_float32(trained[-1])))
        batch = batch_latency(
            {"float32": baseline_file, "int8": result.artifacts["tflite_int8"]}, rows
        )
        # the factory's model is built, not the trained copy: the same
        # architecture, whose float32 time depends on its shapes alone; the
        # file size (within 1%) confirms the architecture
        size = baseline_file.stat().st_size
        same = abs(size - result.metrics["uncompressed_tflite"]["bytes"]) <= 0.01 * size
    seconds = time.perf_counter() - start
    base = result.metrics["uncompressed_tflite"]
    int8 = result.metrics["tflite_int8"]
    return {
        "params": trained[-1].count_params(),
        "compressed params": result.model.count_params(),
        "float32 batch ms": batch["float32"],
        "int8 batch ms": batch["int8"],
        "batch ratio": batch["float32"] / batch["int8"],
        "baseline file checked": same,
        "dataset": dataset,
        "config": config,
        "baseline gzip bytes": base["gzip_bytes"],
        "gzip bytes": int8["gzip_bytes"],
        "ratio": base["gzip_bytes"] / int8["gzip_bytes"],
        "raw ratio": base["bytes"] / int8["bytes"],
        "baseline accuracy": base["accuracy"],
        "accuracy": int8["accuracy"],
        "points lost": 100 * (base["accuracy"] - int8["accuracy"]),
        "float32 latency ms": base["latency_ms"],
        "int8 latency ms": int8["latency_ms"],
        "kernels": int8["kernels"],
        "seconds": seconds,
        "test rows": int8["examples"],
        "interleaved ms": ab,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets.split(","):
        for config in args.configs.split(","):
            rows.append(run(dataset, config, args.seed, args.epochs))
            row = rows[-1]
            print(
                f"{dataset:<14}{config:<32}{row['ratio']:6.1f}x (raw {row['raw ratio']:.1f}x)  "
                f"{row['baseline accuracy']:.4f} -> {row['accuracy']:.4f} "
                f"({row['points lost']:+.2f} pts)  latency {row['float32 latency ms']:.4f} -> "
                f"{row['int8 latency ms']:.4f} ms  [{row['seconds']:.0f} s]",
                flush=True,
            )
    print()
    print(
        "| data | compression | float32 gzip B | compressed gzip B | x smaller (gzip) | "
        "x smaller (raw) | float32 acc | compressed acc | points lost | float32 ms | int8 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['config']} | {r['baseline gzip bytes']:,} | "
            f"{r['gzip bytes']:,} | {r['ratio']:.1f} | {r['raw ratio']:.1f} | "
            f"{r['baseline accuracy']:.4f} | "
            f"{r['accuracy']:.4f} | {r['points lost']:+.2f} | {r['float32 latency ms']:.4f} | "
            f"{r['int8 latency ms']:.4f} |"
        )
    print(
        f"\n| data | compression | params | compressed params | x smaller (raw) | "
        f"float32 batch ms | int8 batch ms | x faster (batch of {BATCH}) | points lost |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['config']} | {r['params']:,} | {r['compressed params']:,} | "
            f"{r['raw ratio']:.1f} | {r['float32 batch ms']:.3f} | {r['int8 batch ms']:.3f} | "
            f"{r['batch ratio']:.2f} | {r['points lost']:+.2f} |"
            + ("" if r["baseline file checked"] else " (not the baseline's architecture!)")
        )
    if any(r["interleaved ms"] for r in rows):
        print("\n| data | float32 ms | int8 ms | int8 / float32 |  (same model, interleaved)")
        print("|---|---|---|---|")
    for r in rows:
        if r["interleaved ms"]:
            f32, i8 = r["interleaved ms"]["tflite"], r["interleaved ms"]["tflite_int8"]
            print(f"| {r['dataset']} | {f32:.4f} | {i8:.4f} | {i8 / f32:.2f} |")
    print(
        f"\n{platform.machine()}, {platform.python_version()}, "
        f"peak RSS {peak_rss_mib():,.0f} MiB; kernels: {rows[-1]['kernels']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
    main()
