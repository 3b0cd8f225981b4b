"""Quickstart: what `kerastrain demo` does, through the Python API.

Trains the small CNN on scikit-learn's digits, exports it (SavedModel, Keras,
TFLite), checks every artifact against the Keras model and writes a report:

    python examples/quickstart.py                 # 20 epochs
    python examples/quickstart.py --quick         # 2 epochs: a check that it runs

Writes to `saved_models/quickstart/` (or `--output-dir DIR`) and prints the
report's path. Every example takes `--quick` and `--output-dir`.
"""

import argparse
import logging

import kerastrain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run: 2 epochs")
parser.add_argument("--output-dir", default="saved_models/quickstart")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

result = kerastrain.fit_pipeline(
    "digits",  # scikit-learn's 8x8 digits, bundled: works offline
    model="auto",  # images -> the small CNN
    train={
        "epochs": 2 if args.quick else 20,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "early_stopping": 5,
    },
    export={"formats": ["savedmodel", "keras", "tflite"]},
    output_dir=args.output_dir,
    overwrite=True,
    seed=0,
)

print(f"Artifacts in {result.run_dir}:")
for fmt, path in result.artifacts.items():
    print(f"  {fmt:<10} {path}")
print(f"Training stopped: {result.stop_reason}")
print(f"Test accuracy, Keras model:  {result.metrics['test']['accuracy']:.4f}")
print(f"Test accuracy, TFLite model: {result.metrics['tflite']['accuracy']:.4f}")
print(f"Report: {result.report_path}")
