"""A folder of class sub-folders of images, in memory and streamed.

Writes scikit-learn's digits 0-4 as PNG files (one folder per class), trains
a CNN with augmentation, then trains again reading the files every epoch
(`in_memory_mb=0` forces streaming, as a folder too large for memory would).

    python examples/data_images.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import kerastrain


def write_folder(root: Path) -> None:
    digits = load_digits()
    names = ["zero", "one", "two", "three", "four"]
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label < 5:
            folder = root / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i}.png")


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    write_folder(workdir / "digits")
    in_memory = kerastrain.fit_pipeline(
        str(workdir / "digits"),
        "cnn",
        seed=0,
        output_dir=str(workdir / "memory"),
        data_options={"augment": ["rotation", "zoom", "translation"], "image_size": [16, 16]},
        train={"epochs": 15, "verbose": 0},
    )
    print("in memory, test accuracy:", in_memory.metrics["test"]["accuracy"])
    print("exported TFLite accuracy:", in_memory.metrics["tflite"]["accuracy"])

    streamed = kerastrain.fit_pipeline(
        str(workdir / "digits"),
        "cnn",
        seed=0,
        output_dir=str(workdir / "stream"),
        data_options={"in_memory_mb": 0, "image_size": [16, 16]},
        train={"epochs": 15, "verbose": 0},
        export={"formats": ["savedmodel"]},
    )
    print("streamed, test accuracy:", streamed.metrics["test"]["accuracy"])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
