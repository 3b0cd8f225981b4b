"""Activation memory with and without `train.recompute` (issue 14).

A 24-block, 512-wide residual MLP (`mlp` with `residual=True`, batch norm) trains a few
steps at the working batch size and at a tiny one, plain and with every block
recomputed. Each case runs in its own process, so that peaks do not mix. The
*activation share* of the peak resident memory is the peak at the working
batch minus the peak at the tiny batch (the rest of the process, weights and
optimizer slots included, is the same in both): recomputation should cut it
by at least 30%. The memory plan's activation estimate at the working batch
(`kerastrain.training.memory.plan_memory`) is printed beside it.

`--transformer` measures the same on `model="transformer"` instead: numeric
sequences of `--length` steps (default 256) through `--blocks` pre-norm blocks
(default 4) `--width` wide (default 128, 4 heads, no dropout), at `--batch`
(default 64); each block's attention and MLP are recomputed beside the
attention mask.

Run: python benchmarks/memory_recompute.py [--batch 1024] [--tiny 8] [--blocks 24]
     python benchmarks/memory_recompute.py --transformer [--length 256] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import resource
import numpy as np
from kerastrain._keras import keras, tf
from kerastrain.config import TrainConfig
from kerastrain.data.preprocess import model_inputs
from kerastrain.models import Head, build_model
from kerastrain.task import Task
from kerastrain.training import compile_model
from kerastrain.training.memory import plan_memory
from kerastrain.training.recompute import recompute_twin, share_compilation

batch, blocks, width, recompute, length = (int(a) for a in sys.argv[1:6])
features, rows = (64, 4096) if not length else (8, 512)
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
shape = (rows, features) if not length else (rows, length, features)
x = rng.standard_normal(shape, np.float32)
y = (x.reshape(rows, -1)[:, 0] > 0).astype(np.float32)
train = TrainConfig(execution={"mixed_precision": "float32", "jit_compile": False,
                               "steps_per_execution": 1})
if length:
    model = build_model("transformer", model_inputs((length, features), None, None),
                        Head(1, "sigmoid"), {"layers": blocks, "heads": 4, "d_model": width,
                                             "dropout": 0.0})
else:
    model = build_model("mlp", model_inputs((features,), None, None), Head(1, "sigmoid"),
                        {"width": width, "depth": blocks, "residual": True, "dropout": 0.0,
                         "batch_norm": True})
compile_model(model, Task("binary"), train)
fitted = model
if recompute:
    fitted = recompute_twin(model)
    compile_model(fitted, Task("binary"), train)
    fitted = share_compilation(fitted, model)
data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
history = fitted.fit(data, steps_per_epoch=4, epochs=1, verbose=0)
plan = plan_memory(model, TrainConfig(recompute=bool(recompute)), batch_size=batch,
                   precision="float32")
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "planned_activations_mib": plan.activations / 2**20,
                  "loss": history.history["loss"][0], "params": model.count_params()}))
"""


def _peak(batch: int, blocks: int, width: int, recompute: bool, length: int = 0) -> dict:
    args = [str(batch), str(blocks), str(width), str(int(recompute)), str(length)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformer", action="store_true", help="a Transformer encoder")
    parser.add_argument("--length", type=int, default=256, help="sequence length (transformer)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--tiny", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    defaults = (64, 4, 128) if args.transformer else (1024, 24, 512)
    args.batch = args.batch or defaults[0]
    args.blocks = args.blocks or defaults[1]
    args.width = args.width or defaults[2]
    length = args.length if args.transformer else 0
    share = {}
    print(
        f"{'case':<12}{'peak MiB (tiny)':>18}{'peak MiB (working)':>20}{'activation MiB':>16}"
        f"{'planned MiB':>13}"
    )
    for recompute in (False, True):
        tiny = _peak(args.tiny, args.blocks, args.width, recompute, length)
        working = _peak(args.batch, args.blocks, args.width, recompute, length)
        share[recompute] = working["peak_mib"] - tiny["peak_mib"]
        name = "recompute" if recompute else "plain"
        print(
            f"{name:<12}{tiny['peak_mib']:>18,.0f}{working['peak_mib']:>20,.0f}"
            f"{share[recompute]:>16,.0f}{working['planned_activations_mib']:>13,.0f}"
            f"   first-epoch loss {working['loss']:.6f}"
        )
    cut = 1 - share[True] / share[False]
    model = f"transformer, length {length}, " if length else ""
    print(
        f"Activation share {cut:.0%} lower with recompute "
        f"({model}{args.blocks} blocks x {args.width} wide, batch {args.batch} vs {args.tiny}); "
        f"target: at least 30% lower."
    )


if __name__ == "__main__":
    main()
