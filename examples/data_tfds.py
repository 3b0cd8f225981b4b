"""``data="tfds:NAME"``: TensorFlow Datasets, with split names and data_dir.

Online, `fit_pipeline("tfds:mnist")` downloads MNIST into `tfds_data_dir`.
This example runs offline: it registers a small TFDS builder (scikit-learn's
digits), prepares it in a temporary folder, and trains on TFDS's own
train/test splits. On a machine without network access, a data set that is
not prepared fails with a message saying how to prepare it elsewhere.

    python examples/data_tfds.py
"""

import sys
import tempfile
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


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    result = kerastrain.fit_pipeline(
        "tfds:digits_example",
        "cnn",
        seed=0,
        output_dir=str(workdir / "run"),
        data_options={
            "tfds_data_dir": str(workdir / "tfds"),
            "tfds_split": {"train": "train", "test": "test"},
        },
        train={"epochs": 15, "verbose": 0},
    )
    print(
        "TFDS test split accuracy:",
        result.metrics["test"]["accuracy"],
        f"({result.metrics['test']['examples']} examples)",
    )
    try:
        kerastrain.fit_pipeline(
            "tfds:mnist",
            data_options={"tfds_data_dir": str(workdir / "empty"), "tfds_download": False},
        )
    except kerastrain.DataError as error:
        print("Without the data and without download:\n", error)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
