"""Cross-validation: one model per fold, mean ± std, and the fold models.

Stratified 5-fold on scikit-learn's wine data; then time-series folds (each
fold trains on the past only) on the diabetes data taken in its row order.

    python examples/cross_validate.py             # 5 + 4 folds, 40 and 60 epochs
    python examples/cross_validate.py --quick     # 2 + 2 folds, 5 epochs: a check that it runs

Writes to `saved_models/cross_validate/` (or `--output-dir DIR`): `wine/` and
`diabetes/`, each with `cv.json` (the summary) and one run folder per fold
(`fold_1/report.html`, ...); it prints where they are.
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

import kerastrain


def main(workdir: Path, quick: bool) -> None:
    folds = 2 if quick else 5
    cv = kerastrain.cross_validate(
        "wine",
        "mlp",
        folds=folds,
        seed=0,
        output_dir=str(workdir / "wine"),
        overwrite=True,
        train={"epochs": 5 if quick else 40, "verbose": 0},
        export={"formats": []},
    )
    print(f"wine, stratified {folds}-fold:", cv.summary())
    print("per fold:", np.round(cv.metrics["accuracy"]["folds"], 3))
    rows = load_wine().data[:3].astype(np.float32)
    averaged = np.mean([model.predict(rows, verbose=0) for model in cv.models], axis=0)
    print(f"the {folds} fold models averaged on 3 rows (an ensemble):", averaged.argmax(axis=1))
    print(f"Summary: {cv.run_dir / 'cv.json'} (each fold's report: fold_<i>/report.html)")

    folds = 2 if quick else 4
    ts = kerastrain.cross_validate(
        "diabetes",
        "mlp",
        folds=folds,
        seed=0,
        output_dir=str(workdir / "diabetes"),
        overwrite=True,
        data_options={"split": "time", "task": "regression"},
        train={"epochs": 5 if quick else 60, "learning_rate": 0.01, "verbose": 0},
        export={"formats": []},
    )
    print(f"diabetes, time-series {folds}-fold:", ts.summary())
    for i, (train, test) in enumerate(ts.folds, start=1):
        print(f"  fold {i}: trains on rows 0..{train.max()}, tested on {test.min()}..{test.max()}")
    print(f"Summary: {ts.run_dir / 'cv.json'} (each fold's report: fold_<i>/report.html)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 + 2 folds, 5 epochs")
    parser.add_argument("--output-dir", type=Path, default=Path("saved_models/cross_validate"))
    args = parser.parse_args()
    main(args.output_dir, args.quick)
