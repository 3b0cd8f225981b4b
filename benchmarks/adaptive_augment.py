"""Adaptive augmentation (issue 16): `augment="auto"` against the fixed
`"light"` policy and no augmentation, same model, data and epochs.

A small image set that over-fits (300 digits, 30% of them for validation,
the small CNN), trained for a fixed number of epochs without early stopping;
each policy's best and final validation accuracy per seed, and the
magnitude's path for "auto".

    python benchmarks/adaptive_augment.py [--rows 300] [--epochs 15] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401 - quiet TensorFlow
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kerastrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[..., None].astype(np.float32)[: args.rows]
    y = bunch.target[: args.rows]
    rows = []
    for seed in args.seeds:
        for policy in (None, "light", "auto"):
            with tempfile.TemporaryDirectory() as tmp:
                result = kerastrain.fit_pipeline(
                    (x, y),
                    "cnn",
                    data_options={"augment": policy, "validation_split": 0.3, "test_split": 0.0},
                    train={
                        "epochs": args.epochs,
                        "verbose": 0,
                        "early_stopping": None,
                        "execution": {"mixed_precision": "float32", "jit_compile": False},
                    },
                    export={"formats": []},
                    report={"explain": "none"},
                    output_dir=tmp,
                    seed=seed,
                )
            val = result.history["val_accuracy"]
            row = {
                "seed": seed,
                "augment": policy,
                "final_val_accuracy": round(val[-1], 4),
                "best_val_accuracy": round(max(val), 4),
            }
            if policy == "auto":
                row["magnitude"] = [round(m, 2) for m in result.history["augment_magnitude"]]
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
