"""The wall time of ``kerastrain demo`` after the imports, as a user waits for it.

TensorFlow and kerastrain are imported first (their cost is the same before
and after any change here); then ``kerastrain demo`` runs in this process
through the command line's own entry point, `--repeats` times, each into a
fresh folder; the median and every run are printed, with the stages of the
last run read back from its `run.json`.

Run it against two checkouts to compare them, alternating:
    PYTHONPATH=/path/to/checkout python benchmarks/demo_wall_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (quiet TensorFlow logs)

import kerastrain.pipeline  # noqa: F401  (TensorFlow and every stage, imported up front)
from kerastrain import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                code = cli.main(["demo", "--output-dir", str(Path(out) / "demo")])
            seconds.append(time.perf_counter() - start)
            assert code == 0, printed.getvalue()
            run = next(Path(out).rglob("run.json"), None)
            stages = json.loads(run.read_text()).get("timings", {}) if run else {}
    print(f"kerastrain demo after imports: median {statistics.median(seconds):.1f} s; runs "
          + ", ".join(f"{s:.1f}" for s in seconds))  # fmt: skip
    print("last run's stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    print(printed.getvalue().strip().splitlines()[-1])


if __name__ == "__main__":
    main()
