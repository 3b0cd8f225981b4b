"""A folder of class sub-folders of images, in memory and streamed.

Writes scikit-learn's digits 0-4 as PNG files (one folder per class), trains
a CNN with augmentation, then trains again reading the files every epoch
(`in_memory_mb=0` forces streaming, as a folder too large for memory would).

    python examples/data_images.py                # all 901 images, 15 epochs a run
    python examples/data_images.py --quick        # 290 images, 2 epochs: a check that it runs

Writes to `saved_models/data_images/` (or `--output-dir DIR`): the image
folder `digits/` and the run folders `memory/` and `stream/`; it prints the
reports' paths.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import kerastrain


def write_folder(root: Path, every: int = 1) -> None:
    """Writes digits 0-4 as PNG files under `root/<class name>/` (every `every`-th one)."""
    if root.exists():
        shutil.rmtree(root)  # a fresh folder: a quick run after a full one writes fewer files
    digits = load_digits()
    names = ["zero", "one", "two", "three", "four"]
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label < 5 and i % every == 0:
            folder = root / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i}.png")


def main(workdir: Path, quick: bool) -> None:
    write_folder(workdir / "digits", every=3 if quick else 1)
    epochs = 2 if quick else 15
    in_memory = kerastrain.fit_pipeline(
        str(workdir / "digits"),
        "cnn",
        seed=0,
        output_dir=str(workdir / "memory"),
        overwrite=True,
        data_options={"augment": ["rotation", "zoom", "translation"], "image_size": [16, 16]},
        train={"epochs": epochs, "verbose": 0},
    )
    print("in memory, test accuracy:", in_memory.metrics["test"]["accuracy"])
    print("exported TFLite accuracy:", in_memory.metrics["tflite"]["accuracy"])
    print(f"Report: {in_memory.report_path}")

    streamed = kerastrain.fit_pipeline(
        str(workdir / "digits"),
        "cnn",
        seed=0,
        output_dir=str(workdir / "stream"),
        overwrite=True,
        data_options={"in_memory_mb": 0, "image_size": [16, 16]},
        train={"epochs": epochs, "verbose": 0},
        export={"formats": ["savedmodel"]},
    )
    print("streamed, test accuracy:", streamed.metrics["test"]["accuracy"])
    print(f"Report: {streamed.report_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="290 images (every third), 2 epochs")
    parser.add_argument("--output-dir", type=Path, default=Path("saved_models/data_images"))
    args = parser.parse_args()
    main(args.output_dir, args.quick)
