"""A CSV file with numeric and categorical columns and missing values.

Writes a CSV from scikit-learn's breast cancer data (with a text column and
holes), trains on it, and calls the exported SavedModel with raw columns:
a missing number (NaN), a missing category (""), a category never seen.

    python examples/data_csv.py                   # 30 epochs
    python examples/data_csv.py --quick           # 3 epochs: a check that it runs

Writes to `saved_models/data_csv/` (or `--output-dir DIR`): the CSV file
`cancer.csv` and the run folder `run/`; it prints the report's path.
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.datasets import load_breast_cancer

import kerastrain
from kerastrain.data.prepare import prepare_data


def main(workdir: Path, quick: bool) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, 4, 5, 30]]
    frame["size"] = pd.cut(
        frame["mean radius"], [0, 12, 15, 99], labels=["small", "medium", "large"]
    ).astype(str)
    rng = np.random.default_rng(0)
    frame.loc[rng.choice(len(frame), 50, replace=False), "mean texture"] = np.nan
    frame.loc[rng.choice(len(frame), 30, replace=False), "size"] = ""
    frame.to_csv(workdir / "cancer.csv", index=False)

    result = kerastrain.fit_pipeline(
        str(workdir / "cancer.csv"),
        "mlp",
        seed=0,
        output_dir=str(workdir / "run"),
        overwrite=True,
        data_options={"target": "target", "missing_indicator": True, "augment": "light"},
        train={"epochs": 3 if quick else 30, "verbose": 0},
    )
    print("test accuracy:", result.metrics["test"]["accuracy"])
    print("tflite accuracy:", result.metrics["tflite"]["accuracy"])
    prepared = prepare_data(str(workdir / "cancer.csv"), result.config.data_options, seed=0)
    for name, encoding in prepared.encoding.describe().items():  # what the model learned
        print(f"  {name}: {encoding}")

    serve = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["serving_default"]
    columns = {
        name: tf.constant(frame[col].to_numpy(np.float32)[:2])
        for name, col in [
            ("mean_radius", "mean radius"),
            ("mean_texture", "mean texture"),
            ("mean_perimeter", "mean perimeter"),
            ("mean_area", "mean area"),
            ("mean_smoothness", "mean smoothness"),
            ("mean_compactness", "mean compactness"),
        ]
    }
    columns["mean_texture"] = tf.constant([np.nan, 20.0])
    columns["size"] = tf.constant(["", "enormous"])
    print("SavedModel on raw columns:", serve(**columns)["output"].numpy().ravel())
    print(f"Report: {result.report_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    parser.add_argument("--output-dir", type=Path, default=Path("saved_models/data_csv"))
    args = parser.parse_args()
    main(args.output_dir, args.quick)
