"""Achieved training FLOP/s of the small CNN, as a fraction of the matmul peak.

The same small CNN as ``cnn_precision.py`` (kerastrain's ``cnn`` factory with
its defaults on 28x28x1 inputs, 10 classes, batch 32), on scikit-learn's
digits resized to 28x28 and tiled with small random pixel shifts to about
10,000 training images:

- the device's matrix-product peak, measured in float32 and in bfloat16
  (`kerastrain.training.flops.matmul_peak_flops`, square 2048 matrices);
- (a) plain tf_keras float32: the same network, ``model.fit`` on a shuffled,
  batched, prefetched tf.data pipeline;
- (b) kerastrain's training: ``kerastrain.fit_pipeline`` with its defaults
  (``mixed_precision="auto"`` picks ``mixed_bfloat16`` on a CPU with
  AVX512_BF16/AMX), per-epoch ``examples_per_second`` from its history.

Achieved FLOP/s = `kerastrain.training.flops.training_flops` (3x the analytic forward
multiply-adds) x examples/s of the steady-state epochs (the first epoch, which
traces and warms up, is left out). Each side's fraction is of the peak of the
dtype its matrix products ran in. Sides are interleaved and repeated; medians.

Run: PYTHONPATH=. python benchmarks/cnn_flops.py [--epochs 4] [--repeats 3] [--examples 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np  # noqa: E402
from _common import epoch_timer, interleave, peak_rss_mib, steady_rate, table
from _images import digits28, shifted_tiles

import kerastrain  # noqa: E402
from kerastrain._keras import keras, tf  # noqa: E402
from kerastrain.models import Head, ModelInputs, cnn  # noqa: E402
from kerastrain.training.flops import matmul_peak_flops, training_flops  # noqa: E402

BATCH = 32
#: The dtype of the matrix products under each Keras policy.
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def plain_fit(
    build: Callable[[], keras.Model],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch: int,
    seed: int,
    policy: str = "float32",
) -> tuple[float, int]:
    """A careful user's tf_keras: the model built under ``policy`` (tf_keras
    adds loss scaling at compile for mixed_float16), ``model.fit`` on a
    shuffled, batched, prefetched tf.data pipeline. Returns steady-state
    examples/s and the model's training FLOPs per example."""
    keras.utils.set_random_seed(seed)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    seconds: list[float] = []
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[epoch_timer(seconds)])
    flops = training_flops(model)
    keras.backend.clear_session()
    return steady_rate(len(x), seconds), flops


def kerastrain_fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch: int,
    seed: int,
    model: str,
    model_options: dict[str, Any] | None = None,
) -> tuple[float, int, str]:
    """``kerastrain.fit_pipeline`` with its defaults on all of ``(x, y)``.

    Returns steady-state examples/s (from the history's per-epoch
    ``epoch_time``), the trained model's training FLOPs per
    example, and the precision ``"auto"`` chose.
    """
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y),
            model,
            model_options=model_options or {},
            data_options={"validation_split": 0.0, "test_split": 0.0},
            train={"epochs": epochs, "batch_size": batch, "early_stopping": None, "verbose": 0},
            export={"formats": []},
            report={"explain": "none"},
            output_dir=out,
            seed=seed,
        )
    rate = steady_rate(len(x), result.history["epoch_time"])
    flops = training_flops(result.model)  # the float32 copy: same layers, same count
    keras.backend.clear_session()
    return rate, flops, str(result.performance["mixed_precision"].value)


def report(
    rates: dict[str, float],
    flops: dict[str, int],
    peaks: dict[str, float],
    dtypes: dict[str, str],
    unit: float = 1e9,
    unit_name: str = "GFLOP/s",
) -> None:
    """The table: examples/s, achieved FLOP/s, the peak of its dtype, fraction."""
    print(
        f"\n{'side':<30}{'examples/s':>12}{'MFLOP/ex':>10}{'achieved ' + unit_name:>20}"
        f"{'peak (dtype)':>26}{'of peak':>9}"
    )
    for name, rate in rates.items():
        achieved = rate * flops[name]
        peak = peaks[dtypes[name]]
        print(
            f"{name:<30}{rate:>12,.0f}{flops[name] / 1e6:>10.2f}{achieved / unit:>20.2f}"
            f"{f'{peak / unit:,.1f} ({dtypes[name]})':>26}{100 * achieved / peak:>8.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is not timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--peak-size", type=int, default=2048)
    args = parser.parse_args()
    digits, labels = digits28()
    x, y = shifted_tiles(digits, labels, args.examples, shift=2, seed=0)

    def build() -> keras.Model:
        inputs = keras.Input(x.shape[1:])
        norm = keras.layers.Normalization()
        norm.adapt(x)
        return cnn(ModelInputs(inputs, norm(inputs)), Head(10, "softmax"))

    print(
        f"data: {len(x):,} images 28x28x1 (digits + shifted copies), batch {BATCH}, "
        f"{args.epochs} epochs per run (first excluded), {args.repeats} repeats"
    )
    peaks = {
        dtype: 1e9 * value
        for dtype, value in table(
            interleave(
                {
                    "float32": lambda _: matmul_peak_flops("float32", args.peak_size) / 1e9,
                    "bfloat16": lambda _: matmul_peak_flops("bfloat16", args.peak_size) / 1e9,
                },
                args.repeats,
            ),
            unit="matmul GFLOP/s",
        ).items()
    }

    plain_fit(build, x[:2000], y[:2000], epochs=1, batch=BATCH, seed=0)  # TF's one-time costs
    flops: dict[str, int] = {}
    chosen: list[str] = []

    def plain(seed: int) -> float:
        rate, flops["plain tf_keras float32"] = plain_fit(
            build, x, y, epochs=args.epochs, batch=BATCH, seed=seed
        )
        return rate

    def ours(seed: int) -> float:
        rate, flops["kerastrain defaults"], policy = kerastrain_fit(
            x, y, epochs=args.epochs, batch=BATCH, seed=seed, model="cnn"
        )
        chosen.append(policy)
        return rate

    rates = table(
        interleave({"plain tf_keras float32": plain, "kerastrain defaults": ours}, args.repeats)
    )
    policy = statistics.mode(chosen)
    print(f"kerastrain precision chosen per run: {', '.join(chosen)}")
    dtypes = {"plain tf_keras float32": "float32", "kerastrain defaults": COMPUTE_DTYPE[policy]}
    report(rates, flops, peaks, dtypes)
    print(
        f"speedup kerastrain / plain: {rates['kerastrain defaults'] / rates['plain tf_keras float32']:.2f}x; "
        f"peak bfloat16 / float32: {peaks['bfloat16'] / peaks['float32']:.2f}x"
    )
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
