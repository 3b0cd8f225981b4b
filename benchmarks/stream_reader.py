"""Peak memory of one shuffled pass over a streamed table's training split,
the reader alone (no model): what the tf.data stream holds while it reads.

    python benchmarks/stream_reader.py "/tmp/data/part-*.parquet"

The table is prepared as `fit_pipeline` streams it (`in_memory_mb=1`, target
``label``, as `benchmarks/streaming.py` generates); after a short warm-up
pass, the resident set is sampled every 0.1 s during one pass over the
training rows in batches of 1024. Prints one JSON line: the peak and the end
resident set over the baseline taken before the pass, in MiB, and the
seconds the pass took. Run each table in a fresh process.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(x.split()[1]) for x in status if x.startswith("VmRSS")) / 1024


def main() -> None:
    from kerastrain.config import DataConfig
    from kerastrain.data.prepare import prepare_data

    pattern = sys.argv[1]
    prepared = prepare_data(pattern, DataConfig(target="label", in_memory_mb=1), seed=0)
    stream, train = prepared.x, prepared.splits.train
    for _ in stream.batches(prepared.splits.val[:5000], 1024, shuffle=False).take(2):
        pass  # the tf.data runtime is up before the baseline
    baseline, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _rss_mib() - baseline)

    threading.Thread(target=sample, daemon=True).start()
    start, rows = time.perf_counter(), 0
    for position, _ in stream.batches(train, 1024, shuffle=True, seed=0):
        rows += len(position)
    done.set()
    print(
        json.dumps(
            {
                "pattern": pattern,
                "rows": int(prepared.num_rows),
                "train_rows_read": rows,
                "seconds": round(time.perf_counter() - start, 1),
                "peak_over_baseline_mib": round(peak[0]),
                "end_over_baseline_mib": round(_rss_mib() - baseline),
            }
        )
    )


if __name__ == "__main__":
    main()
