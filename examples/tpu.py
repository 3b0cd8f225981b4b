"""Training on a Cloud TPU (`TPUStrategy`).

On a Cloud TPU VM (the TPU is attached to the VM; its image carries the
TensorFlow build for TPUs):
    python examples/tpu.py --tpu local
On Colab with a TPU runtime (Runtime > Change runtime type > TPU):
    python examples/tpu.py
On a TPU node reached over the network, give its name or grpc://address; such
a TPU writes checkpoints itself, so kerastrain warns when the run folder is a
local path it cannot reach.

Without a TPU the script stops at once with an explanation (it never hangs
waiting for one); `strategy="auto"` would fall back to a GPU or the CPU.
    python examples/tpu.py --tpu local --quick    # 1 epoch: a check that it runs

Writes to `saved_models/tpu/` (or `--output-dir DIR`) and prints the report's
path.
"""

import argparse
import logging

import kerastrain
from kerastrain.distribute import make_strategy
from kerastrain.training.execution import device_info
from kerastrain.training.precision import pick_precision

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--tpu", default=None, help="'local', a TPU name, or grpc://host:port")
parser.add_argument("--quick", action="store_true", help="a short run: 1 epoch")
parser.add_argument("--epochs", type=int, help="default 10 (1 with --quick)")
parser.add_argument("--output-dir", default="saved_models/tpu")
args = parser.parse_args()
epochs = args.epochs if args.epochs is not None else (1 if args.quick else 10)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

try:
    strategy = make_strategy("tpu", kerastrain.DistributeConfig(tpu_address=args.tpu))
except kerastrain.ConfigError as exc:
    raise SystemExit(f"{exc}") from None

# TPUs compute in bfloat16: "mixed_bfloat16" is the policy that suits them.
print(
    f"{strategy.num_replicas_in_sync} TPU cores; precision policy "
    f"{pick_precision(device_info(strategy)).value!r}."
)

result = kerastrain.fit_pipeline(
    "digits",
    model="cnn",
    strategy=strategy,
    # 128 per core; TPUs like large, fixed-size batches.
    train={"epochs": epochs, "batch_size": 128},
    distribute={"scale_learning_rate": True, "tpu_address": args.tpu},
    export={"formats": ["savedmodel", "keras"]},
    output_dir=args.output_dir,
    overwrite=True,
    seed=0,
)
print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
print(f"Report: {result.report_path}")
