"""float32 vs mixed_float16 on a GPU: a ResNet's examples/s and achieved TFLOP/s.

A ResNet-style network (kerastrain's ``resnet`` factory; 32x32x3 synthetic
images generated here, 10 classes, batch 256) trained three ways:

- (a) plain tf_keras float32: ``model.fit`` on a shuffled, batched,
  prefetched tf.data pipeline;
- (b) plain tf_keras ``mixed_float16``: the same, built under the policy (the
  output layer stays float32; tf_keras wraps the optimizer in a
  ``LossScaleOptimizer`` at compile, as it does for this policy);
- (c) ``kerastrain.fit_pipeline`` with its defaults (``mixed_precision="auto"``
  picks ``mixed_float16`` on GPUs with tensor cores).

Reported: steady-state examples/s (the first epoch, which traces and warms
up, is left out), achieved TFLOP/s (`kerastrain.training.flops.training_flops` x
examples/s), the measured float32 and float16 matrix-product peaks
(`kerastrain.training.flops.matmul_peak_flops`, square 8192 matrices) and the
fraction of the peak of each side's dtype, and the mixed_float16 / float32
ratios. Note that TensorFlow runs float32 matrix products and convolutions in
TensorFloat-32 on Ampere and later GPUs unless told not to; the script prints
whether TF32 is on, and the float32 peak is measured under the same setting.
Sides are interleaved and repeated; medians. Exits with status 2 and a
message when TensorFlow sees no GPU. A few minutes on one datacenter GPU.

Run: PYTHONPATH=. python benchmarks/gpu.py [--epochs 4] [--repeats 2] [--width 64]

`--model-parallel` runs the other section instead: model parallel (DTensor)
vs data parallel on the same wide MLP, throughput and parameter bytes per
device (see `_model_parallel.py`; `--cpu-dry-run` checks it on logical CPUs):
    PYTHONPATH=. python benchmarks/gpu.py --model-parallel [--devices 2]
"""

from __future__ import annotations

import argparse
import sys

import _model_parallel  # noqa: E402
import numpy as np  # noqa: E402
from _common import interleave, peak_rss_mib, table
from cnn_flops import COMPUTE_DTYPE, kerastrain_fit, plain_fit, report  # noqa: E402

from kerastrain._keras import keras, tf  # noqa: E402
from kerastrain.models import Head, ModelInputs, resnet  # noqa: E402
from kerastrain.training.flops import matmul_peak_flops  # noqa: E402


def require_gpu() -> list:
    """The visible GPUs; exits with status 2 and a message when there is none."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print(
            "benchmarks/gpu.py needs a GPU, and TensorFlow sees none on this machine "
            f"(tf {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}). "
            "Run it on a machine with an NVIDIA GPU and a CUDA build of TensorFlow.",
            file=sys.stderr,
        )
        sys.exit(2)
    return gpus


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 32x32x3 float32 images and labels that depend on them (a
    random linear score per class), so training has something to learn."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    scores = x.reshape(n, -1) @ rng.normal(size=(32 * 32 * 3, 10)).astype(np.float32)
    return x, scores.argmax(axis=1).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is not timed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--examples", type=int, default=256 * 100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64, help="resnet filters of the first stage")
    parser.add_argument("--peak-size", type=int, default=8192)
    parser.add_argument("--model-parallel", action="store_true", help="the DTensor section")
    parser.add_argument("--devices", type=int, default=2, help="model-parallel mesh size")
    parser.add_argument("--mp-width", type=int, default=8192, help="model-parallel MLP width")
    parser.add_argument("--mp-depth", type=int, default=4, help="model-parallel MLP depth")
    parser.add_argument("--memory-mb", type=int, default=30000, help="per logical GPU")
    parser.add_argument("--cpu-dry-run", action="store_true", help="model-parallel, tiny, CPU")
    args = parser.parse_args()
    if args.model_parallel:
        if not args.cpu_dry_run:
            require_gpu()
        _model_parallel.run(args)
        return
    gpus = require_gpu()
    details = tf.config.experimental.get_device_details(gpus[0])
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    print(
        f"GPU: {details.get('device_name', gpus[0].name)}, compute capability "
        f"{details.get('compute_capability')}, {len(gpus)} visible; "
        f"TensorFloat-32 for float32: {'on' if tf32 else 'off'}"
    )

    x, y = synthetic_images(args.examples, seed=0)
    options = {"width": args.width}

    def build() -> keras.Model:
        inputs = keras.Input(x.shape[1:])
        return resnet(ModelInputs(inputs, inputs), Head(10, "softmax"), **options)

    print(
        f"data: {len(x):,} synthetic 32x32x3 images, batch {args.batch}, resnet width "
        f"{args.width}, {args.epochs} epochs per run (first excluded), {args.repeats} repeats"
    )
    peaks = {
        dtype: 1e12 * value
        for dtype, value in table(
            interleave(
                {
                    "float32": lambda _: matmul_peak_flops("float32", args.peak_size) / 1e12,
                    "float16": lambda _: matmul_peak_flops("float16", args.peak_size) / 1e12,
                },
                args.repeats,
            ),
            unit="matmul TFLOP/s",
        ).items()
    }
    print(f"peak float16 / float32: {peaks['float16'] / peaks['float32']:.2f}x")

    plain_fit(
        build, x[: 4 * args.batch], y[: 4 * args.batch], epochs=1, batch=args.batch, seed=0
    )  # TensorFlow's and the GPU's one-time costs
    flops: dict[str, int] = {}
    chosen: list[str] = []

    def plain(policy: str):
        def side(seed: int) -> float:
            rate, flops[f"plain tf_keras {policy}"] = plain_fit(
                build, x, y, epochs=args.epochs, batch=args.batch, seed=seed, policy=policy
            )
            return rate

        return side

    def ours(seed: int) -> float:
        rate, flops["kerastrain defaults"], policy = kerastrain_fit(
            x,
            y,
            epochs=args.epochs,
            batch=args.batch,
            seed=seed,
            model="resnet",
            model_options=options,
        )
        chosen.append(policy)
        return rate

    rates = table(
        interleave(
            {
                "plain tf_keras float32": plain("float32"),
                "plain tf_keras mixed_float16": plain("mixed_float16"),
                "kerastrain defaults": ours,
            },
            args.repeats,
        )
    )
    print(f"kerastrain precision chosen per run: {', '.join(chosen)}")
    dtypes = {
        "plain tf_keras float32": "float32",
        "plain tf_keras mixed_float16": "float16",
        "kerastrain defaults": COMPUTE_DTYPE[max(set(chosen), key=chosen.count)],
    }
    for dtype in set(dtypes.values()) - set(peaks):  # kerastrain chose another precision
        peaks[dtype] = matmul_peak_flops(dtype, args.peak_size)
    report(rates, flops, peaks, dtypes, unit=1e12, unit_name="TFLOP/s")
    print(
        f"ratio plain mixed_float16 / float32: "
        f"{rates['plain tf_keras mixed_float16'] / rates['plain tf_keras float32']:.2f}x; "
        f"kerastrain / plain float32: "
        f"{rates['kerastrain defaults'] / rates['plain tf_keras float32']:.2f}x"
    )
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
