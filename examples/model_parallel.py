"""Tensor model parallelism: one model's weights split over several devices (DTensor).

On a machine with several GPUs, every GPU goes on the mesh's "model" axis and
each Dense pair, Conv2D and Embedding is split over them:
    python examples/model_parallel.py
Without a GPU, this script splits the CPU into 4 logical devices first and lays
them out as a 2x2 mesh (2 on "batch", 2 on "model"), so the same code runs on
a laptop:
    python examples/model_parallel.py --epochs 3
    python examples/model_parallel.py --quick      # 1 epoch: a check that it runs

The log and the report say which layers were split and which stayed whole
(with why); the exported files are ordinary single-device models, checked
against the trained one. Writes to `saved_models/model_parallel/` (or
`--output-dir DIR`) and prints the report's path.
"""

import argparse
import logging

import tensorflow as tf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run: 1 epoch")
parser.add_argument("--epochs", type=int, help="default 10 (1 with --quick)")
parser.add_argument("--batch-size", type=int, default=64, help="per batch shard")
parser.add_argument("--output-dir", default="saved_models/model_parallel")
args = parser.parse_args()
epochs = args.epochs if args.epochs is not None else (1 if args.quick else 10)

import kerastrain  # noqa: E402
from kerastrain.mesh import use_logical_cpus  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

if tf.config.list_physical_devices("GPU"):
    mesh = None  # every GPU on "model"
else:
    use_logical_cpus(4)  # before TensorFlow starts its devices
    mesh = {"batch": 2, "model": 2}

result = kerastrain.fit_pipeline(
    "digits",
    model="mlp",
    model_options={"width": 256, "depth": 2},
    strategy="model_parallel",
    distribute={"mesh": mesh},
    train={"epochs": epochs, "batch_size": args.batch_size, "learning_rate": 1e-3},
    export={"formats": ["keras", "tflite"]},
    output_dir=args.output_dir,
    overwrite=True,
    seed=0,
)
plan = result.performance["model_parallel"]
print(f"Mesh: {plan.value}")
print(f"Layers: {plan.reason}")
print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
print(f"TFLite agreement with the trained model: {result.metrics['tflite']['agreement']:.4f}")
print(f"Report: {result.report_path}")
