"""Peak memory of a run on a large NumPy input: it must not double.

Builds a float32 feature array of --gigabytes GB (aligned or as NumPy
allocates it), then runs fit_pipeline for one epoch on it with export off,
and reports the peak resident set (VmHWM) against the input's size. Each case
runs in its own process so that peaks do not mix.

Run: python benchmarks/memory.py [--gigabytes 1.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, tempfile
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import kerastrain
from kerastrain._keras import tf  # imported before measuring the baseline

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024

gigabytes, aligned = float(sys.argv[1]), sys.argv[2] == "aligned"
features = 256
rows = int(gigabytes * 2**30 / (4 * features))
baseline = status("VmRSS")
if aligned:
    buffer = np.empty(rows * features + 16, np.float32)
    offset = (-buffer.ctypes.data % 64) // 4
    x = buffer[offset:offset + rows * features].reshape(rows, features)
else:
    x = np.empty((rows, features), np.float32)
rng = np.random.default_rng(0)
for start in range(0, rows, 65536):
    x[start:start + 65536] = rng.standard_normal((min(65536, rows - start), features), np.float32)
y = (x[:, 0] > 0).astype(np.int64)
after_data = status("VmRSS")
with tempfile.TemporaryDirectory() as out:
    kerastrain.fit_pipeline((x, y), "mlp", model_options={"width": 32, "depth": 1},
                            train={"epochs": 1, "batch_size": 1024, "verbose": 0,
                                   "early_stopping": None},
                            export={"formats": []}, output_dir=out, seed=0)
print(json.dumps({"input_mib": x.nbytes / 2**20, "baseline_mib": baseline,
                  "after_data_mib": after_data, "peak_mib": status("VmHWM")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parser.parse_args()
    print(
        f"{'input':<22}{'input MiB':>12}{'peak over baseline MiB':>26}{'peak / (baseline + input)':>28}"
    )
    for layout in ("numpy-allocated", "aligned"):
        with tempfile.TemporaryDirectory():
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(args.gigabytes),
                    "aligned" if layout == "aligned" else "plain",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        over = r["peak_mib"] - r["baseline_mib"]
        ratio = r["peak_mib"] / (r["baseline_mib"] + r["input_mib"])
        print(f"{layout:<22}{r['input_mib']:>12,.0f}{over:>26,.0f}{ratio:>28.2f}")
    print("A second full copy of the input would put 'peak over baseline' near 2x the input.")


if __name__ == "__main__":
    main()
