"""Streaming a table larger than memory: peak memory and examples/s.

1. A generated table (12 numeric columns with holes, 4 text categories, 3
   small integer columns, a binary label) is written under ``--dir`` as CSV
   parts of ``--gigabytes`` in all, and the same rows as Parquet parts.
2. For each format, a fresh process trains one epoch on it with
   ``fit_pipeline`` (forced to stream: ``in_memory_mb=1``; no export, no
   explanation) and reports its peak resident memory over the baseline it
   had after importing TensorFlow and kerastrain, and the training epoch's
   examples/s.
3. On a table that fits (``--small-rows`` rows as one CSV file), the same
   pipeline in memory and streamed: the epoch's examples/s of each.

The files are deleted at the end (``--keep`` keeps them).

    python benchmarks/streaming.py --gigabytes 2.0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import peak_rss_mib  # noqa: E402

ROWS_PER_PART = 500_000


def _table(rows: int, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns, logit = {}, np.zeros(rows)
    for i in range(12):
        values = rng.normal(size=rows).astype(np.float32)
        logit += values * (1.0 / (i + 1))
        mask = rng.random(rows) < 0.02
        columns[f"n{i}"] = pa.array(values, mask=mask)
    for i, size in enumerate((4, 12, 50, 200)):
        codes = rng.integers(0, size, rows)
        logit += (codes % 3 == 0) * 0.5
        words = np.array([f"c{i}_{k}" for k in range(size)], dtype=object)
        columns[f"cat{i}"] = pa.array(words[codes], mask=rng.random(rows) < 0.02)
    for i in range(3):
        columns[f"level{i}"] = pa.array(rng.integers(0, 5, rows))
    columns["label"] = pa.array((logit + rng.logistic(size=rows) > 0.4).astype(np.int64))
    return pa.table(columns)


def generate(folder: Path, gigabytes: float) -> dict:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    (folder / "csv").mkdir(parents=True, exist_ok=True)
    (folder / "parquet").mkdir(parents=True, exist_ok=True)
    written, part, rows, start = 0, 0, 0, time.perf_counter()
    while written < gigabytes * 2**30:
        table = _table(ROWS_PER_PART, part)
        path = folder / "csv" / f"part-{part:04d}.csv"
        pacsv.write_csv(table, path)
        pq.write_table(table, folder / "parquet" / f"part-{part:04d}.parquet")
        written += path.stat().st_size
        rows += table.num_rows
        part += 1
    parquet = sum(p.stat().st_size for p in (folder / "parquet").iterdir())
    return {
        "rows": rows,
        "parts": part,
        "csv_gib": written / 2**30,
        "parquet_gib": parquet / 2**30,
        "seconds": time.perf_counter() - start,
    }


def _rss_mib() -> float:
    """The resident set now, in MiB."""
    with open("/proc/self/status") as status:
        return next(int(x.split()[1]) for x in status if x.startswith("VmRSS")) / 1024


def train(pattern: str, in_memory_mb: float, batch_size: int) -> dict:
    """One epoch of fit_pipeline, in this process (run it in a fresh one)."""
    import logging
    import re

    import kerastrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logging.getLogger("kerastrain").addHandler(Keep())
    imported = peak_rss_mib()
    # The baseline: a process whose TensorFlow runtime is up and has trained
    # once (a tiny in-memory run), so that only the data's cost is counted.
    warm = kerastrain.fit_pipeline(
        "iris",
        "mlp",
        seed=0,
        output_dir=f"/tmp/kerastrain-streaming-warm-{os.getpid()}",
        overwrite=True,
        train={"epochs": 1, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report={"explain": "none"},
    )
    shutil.rmtree(warm.run_dir, ignore_errors=True)
    lines.clear()
    baseline = _rss_mib()
    stage_peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:  # the resident set, every 0.2 s, by pipeline stage
        while not done.wait(0.2):
            stage = next((m.split()[1] for m in reversed(lines) if m.startswith("Stage ")), "start")
            rss = _rss_mib()
            stage_peaks[stage] = max(stage_peaks.get(stage, 0.0), rss - baseline)

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    result = kerastrain.fit_pipeline(
        pattern,
        "mlp",
        seed=0,
        output_dir=f"/tmp/kerastrain-streaming-run-{os.getpid()}",
        overwrite=True,
        data_options={"target": "label", "in_memory_mb": in_memory_mb},
        train={"epochs": 1, "batch_size": batch_size, "verbose": 0, "early_stopping": None},
        model_options={"width": 64},
        export={"formats": []},
        report={"explain": "none"},
    )
    done.set()
    shutil.rmtree(result.run_dir, ignore_errors=True)
    splits = next(re.search(r"splits (\{.*?\})", m) for m in lines if m.startswith("Data: "))
    train_rows = json.loads(splits.group(1).replace("'", '"'))["train"]
    return {
        "imported_mib": imported,
        "baseline_mib": baseline,
        "peak_over_baseline_mib": max(stage_peaks.values()),
        "peak_over_imported_mib": peak_rss_mib() - imported,
        "stage_peak_over_baseline_mib": {k: round(v) for k, v in stage_peaks.items()},
        "streamed": any("streamed from its files" in m for m in lines),
        "train_rows": train_rows,
        "data_seconds": result.timings.get("data"),
        "train_seconds": result.timings.get("train"),
        "train_examples_per_s": train_rows / result.timings["train"],
        "total_seconds": time.perf_counter() - start,
        "test_accuracy": result.metrics["test"]["accuracy"],
    }


def _child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    sys.stderr.write(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--dir", default="/tmp/kerastrain-streaming")
    parser.add_argument("--small-rows", type=int, default=300_000, help="0: no comparison")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--train", nargs=2, metavar=("PATTERN", "IN_MEMORY_MB"))
    args = parser.parse_args()
    if args.train:
        print(json.dumps(train(args.train[0], float(args.train[1]), args.batch_size)))
        return
    folder = Path(args.dir)
    results: dict = {}
    try:
        bs = ["--batch-size", str(args.batch_size)]
        folder.mkdir(parents=True, exist_ok=True)
        if args.gigabytes > 0:  # 0: the comparison on a table that fits only
            results["generated"] = generate(folder, args.gigabytes)
            print(json.dumps(results["generated"]), flush=True)
        for fmt in args.formats.split(",") if args.gigabytes > 0 else []:
            results[fmt] = _child("--train", str(folder / fmt / f"part-*.{fmt}"), "1", *bs)
            print(fmt, json.dumps(results[fmt]), flush=True)
        if not args.small_rows:
            print(json.dumps(results, indent=1))
            return
        small = folder / "small.csv"
        import pyarrow.csv as pacsv

        pacsv.write_csv(_table(args.small_rows, 999), small)
        size_mb = small.stat().st_size / 2**20
        results["small_in_memory"] = _child("--train", str(small), str(size_mb * 4), *bs)
        results["small_streamed"] = _child("--train", str(small), str(size_mb / 4), *bs)
        ratio = (
            results["small_streamed"]["train_examples_per_s"]
            / results["small_in_memory"]["train_examples_per_s"]
        )
        results["streamed_over_in_memory_examples_per_s"] = ratio
        print(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
