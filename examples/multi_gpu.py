"""Data-parallel training on every GPU of one machine (`MirroredStrategy`).

On a machine with several GPUs (a cloud VM with 2-8 GPUs, a workstation):
    python examples/multi_gpu.py
Each GPU takes `batch_size` examples per step, so the global batch is
batch_size x GPUs; `scale_learning_rate` grows the learning rate with it (the
linear scaling rule). The run's report states the strategy and both batches.

Without a GPU, "mirrored" mirrors over the CPU's logical devices; this script
splits the CPU in two first, so the same code runs on a laptop:
    python examples/multi_gpu.py --epochs 3
    python examples/multi_gpu.py --quick          # 1 epoch: a check that it runs

Writes to `saved_models/multi_gpu/` (or `--output-dir DIR`) and prints the
report's path.
"""

import argparse
import logging

import tensorflow as tf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run: 1 epoch")
parser.add_argument("--epochs", type=int, help="default 10 (1 with --quick)")
parser.add_argument("--batch-size", type=int, default=64, help="per replica")
parser.add_argument("--output-dir", default="saved_models/multi_gpu")
args = parser.parse_args()
epochs = args.epochs if args.epochs is not None else (1 if args.quick else 10)

if not tf.config.list_physical_devices("GPU"):
    # Must happen before TensorFlow initializes its devices (before any op).
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import kerastrain  # noqa: E402
from kerastrain.distribute import make_strategy  # noqa: E402
from kerastrain.training.execution import device_info  # noqa: E402
from kerastrain.training.precision import pick_precision  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

strategy = make_strategy("mirrored")
precision = pick_precision(device_info(strategy))  # mixed_float16 on GPUs with tensor cores
print(
    f"Mirroring over {strategy.num_replicas_in_sync} devices; the precision policy that "
    f"suits them is {precision.value!r} ({precision.reason})."
)

result = kerastrain.fit_pipeline(
    "digits",
    model="cnn",
    strategy=strategy,  # or simply strategy="mirrored"
    train={"epochs": epochs, "batch_size": args.batch_size, "learning_rate": 1e-3},
    distribute={"scale_learning_rate": True},  # 1e-3 x replicas
    export={"formats": ["savedmodel", "keras"]},
    output_dir=args.output_dir,
    overwrite=True,
    seed=0,
)
print(
    f"Global batch: {args.batch_size} x {strategy.num_replicas_in_sync} replicas = "
    f"{args.batch_size * strategy.num_replicas_in_sync}"
)
print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
print(f"Report: {result.report_path}")
