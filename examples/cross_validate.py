"""Cross-validation: one model per fold, mean ± std, and the fold models.

Stratified 5-fold on scikit-learn's wine data; then time-series folds (each
fold trains on the past only) on the diabetes data taken in its row order.

    python examples/cross_validate.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

import kerastrain


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    cv = kerastrain.cross_validate(
        "wine",
        "mlp",
        folds=5,
        seed=0,
        output_dir=str(workdir / "wine"),
        train={"epochs": 40, "verbose": 0},
        export={"formats": []},
    )
    print("wine, stratified 5-fold:", cv.summary())
    print("per fold:", np.round(cv.metrics["accuracy"]["folds"], 3))
    rows = load_wine().data[:3].astype(np.float32)
    averaged = np.mean([model.predict(rows, verbose=0) for model in cv.models], axis=0)
    print("the 5 fold models averaged on 3 rows (an ensemble):", averaged.argmax(axis=1))

    ts = kerastrain.cross_validate(
        "diabetes",
        "mlp",
        folds=4,
        seed=0,
        output_dir=str(workdir / "diabetes"),
        data_options={"split": "time", "task": "regression"},
        train={"epochs": 60, "learning_rate": 0.01, "verbose": 0},
        export={"formats": []},
    )
    print("diabetes, time-series 4-fold:", ts.summary())
    for i, (train, test) in enumerate(ts.folds, start=1):
        print(f"  fold {i}: trains on rows 0..{train.max()}, tested on {test.min()}..{test.max()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
