"""Hyperband against random search: same space, same data, same seed.

Prints, for each algorithm, the trials run, the training epochs spent over
all of them, the best validation accuracy reached and the wall time, and
whether Hyperband reached within 1 point of random search's best with at most
half its epochs (the goal of issue 6).

    PYTHONPATH=. python benchmarks/tuning.py              # digits, 20 random trials
    PYTHONPATH=. python benchmarks/tuning.py --seeds 0 1  # repeat over seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerastrain.config import load_config  # noqa: E402
from kerastrain.data.prepare import prepare_data  # noqa: E402
from kerastrain.distribute import make_strategy  # noqa: E402
from kerastrain.tune import run_search  # noqa: E402

SPACE = {
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-1, "log": True},
    "width": {"type": "int", "min": 16, "max": 256, "step": 16},
    "depth": {"type": "int", "min": 1, "max": 3},
    "dropout": {"type": "float", "min": 0.0, "max": 0.5},
    "optimizer": ["adam", "sgd"],
    "momentum": {"type": "float", "min": 0.0, "max": 0.95, "when": {"optimizer": "sgd"}},
}


def search(algorithm: str, seed: int, max_epochs: int, random_trials: int, folder: str) -> dict:
    """One search on digits; returns its figures."""
    config = load_config(
        {
            "data": "digits",
            "model": "mlp",
            "seed": seed,
            "data_options": {"validation_split": 0.2, "test_split": 0.0},
            "train": {"epochs": max_epochs, "verbose": 0, "early_stopping": None},
            "tune": {
                "algorithm": algorithm,
                "max_epochs": max_epochs,
                "max_trials": random_trials if algorithm == "random" else 1000,
                "objective": "val_accuracy",
                "space": SPACE,
                "directory": os.path.join(folder, f"{algorithm}-{seed}"),
            },
        }
    )
    prepared = prepare_data(config.data, config.data_options, seed)
    start = time.perf_counter()
    result = run_search(config, prepared, make_strategy("cpu"))
    return {
        "algorithm": algorithm,
        "seed": seed,
        "trials": len(result.rows),
        "epochs": result.epochs_spent,
        "best_val_accuracy": round(result.best_score, 4),
        "seconds": round(time.perf_counter() - start, 1),
        "best": result.best_values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--random-trials", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for algorithm in ("random", "hyperband"):
                rows.append(search(algorithm, seed, args.max_epochs, args.random_trials, folder))
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'algorithm':<10} {'seed':>4} {'trials':>6} {'epochs':>6} {'best val acc':>12} "
        f"{'seconds':>8}"
    )
    for row in rows:
        print(
            f"{row['algorithm']:<10} {row['seed']:>4} {row['trials']:>6} {row['epochs']:>6} "
            f"{row['best_val_accuracy']:>12.4f} {row['seconds']:>8.1f}"
        )
    for seed in args.seeds:
        rnd, hb = (
            next(r for r in rows if r["seed"] == seed and r["algorithm"] == a)
            for a in ("random", "hyperband")
        )
        gap = 100 * (rnd["best_val_accuracy"] - hb["best_val_accuracy"])
        share = hb["epochs"] / rnd["epochs"]
        verdict = "met" if gap <= 1 and share <= 0.5 else "missed"
        print(
            f"seed {seed}: Hyperband is {gap:+.2f} points behind random with {share:.0%} of its "
            f"epochs; goal (<= 1 point, <= 50%) {verdict}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
