"""``data="tfds:NAME"``: TensorFlow Datasets, with split names and data_dir.

Online, `fit_pipeline("tfds:mnist")` downloads MNIST into `tfds_data_dir`.
This example runs offline: it registers a small TFDS builder (scikit-learn's
digits), prepares it in the example's folder, and trains on TFDS's own
train/test splits. On a machine without network access, a data set that is
not prepared fails with a message saying how to prepare it elsewhere.

    python examples/data_tfds.py                  # 15 epochs
    python examples/data_tfds.py --quick          # 2 epochs: a check that it runs

Writes to `saved_models/data_tfds/` (or `--output-dir DIR`): the prepared
data set in `tfds/` and the run folder `run/`; it prints the report's path.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

import kerastrain


class DigitsExample(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's digits as a TFDS data set (registered as 'digits_example')."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, 1400),
            "test": self._generate_examples(1400, 1797),
        }

    def _generate_examples(self, start, stop):
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i in range(start, stop):
            yield (
                i,
                {
                    "image": (digits.images[i][..., None] * 15).astype(np.uint8),
                    "label": int(digits.target[i]),
                },
            )


def main(workdir: Path, quick: bool) -> None:
    result = kerastrain.fit_pipeline(
        "tfds:digits_example",
        "cnn",
        seed=0,
        output_dir=str(workdir / "run"),
        overwrite=True,
        data_options={
            "tfds_data_dir": str(workdir / "tfds"),
            "tfds_split": {"train": "train", "test": "test"},
        },
        train={"epochs": 2 if quick else 15, "verbose": 0},
    )
    print(
        "TFDS test split accuracy:",
        result.metrics["test"]["accuracy"],
        f"({result.metrics['test']['examples']} examples)",
    )
    print(f"Report: {result.report_path}")

    # fit_pipeline opens its run folder before it reads the data, so that a run
    # that fails records why (run.json, config.yaml); this failure is only a
    # demonstration, so its folder is removed.
    failed_run = workdir / "without_data"
    try:
        kerastrain.fit_pipeline(
            "tfds:mnist",
            output_dir=str(failed_run),
            data_options={"tfds_data_dir": str(workdir / "empty"), "tfds_download": False},
        )
    except kerastrain.DataError as error:
        print("Without the data and without download:\n", error)
    finally:
        shutil.rmtree(failed_run, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    parser.add_argument("--output-dir", type=Path, default=Path("saved_models/data_tfds"))
    args = parser.parse_args()
    main(args.output_dir, args.quick)
