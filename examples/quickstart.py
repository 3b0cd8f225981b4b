"""Quickstart: what `kerastrain demo` does, through the Python API.

Run: python examples/quickstart.py
"""

import logging

import kerastrain

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

result = kerastrain.fit_pipeline(
    "digits",  # scikit-learn's 8x8 digits, bundled: works offline
    model="auto",  # images -> the small CNN
    train={"epochs": 20, "optimizer": "adam", "learning_rate": 1e-3, "early_stopping": 5},
    export={"formats": ["savedmodel", "keras", "tflite"]},
    output_dir="saved_models/quickstart",
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
