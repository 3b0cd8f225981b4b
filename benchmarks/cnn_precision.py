"""kerastrain's defaults vs plain float32 tf_keras on a small CNN (28x28 digits).

The plain side is a careful user's float32 code: the same two-convolution
network (kerastrain's ``cnn`` factory: 32 and 64 filters, dense 64), a
shuffled, batched, prefetched tf.data pipeline, ``model.fit``. kerastrain
runs with its defaults (``mixed_precision="auto"`` measures ``mixed_bfloat16``
against float32 on a CPU with AVX512_BF16/AMX and keeps the faster;
``steps_per_execution`` and ``jit_compile`` auto). Speed is measured on
scikit-learn's digits resized to 28x28 and tiled with shifted copies (about
10,000 images, so that epochs are long enough to time): the whole training
stage (build, compile, probes, every epoch) and the steady epochs after the
first. A and B are interleaved and repeated; medians.

Accuracy guard: on the real digits only (1,797 images, 30% held out, no
shifted copies), kerastrain's default run and the same run forced to float32,
same seeds; the default must reach the float32 test accuracy within 0.5 point.

Run: python benchmarks/cnn_precision.py [--epochs 4] [--repeats 3] [--examples 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np  # noqa: E402
from _common import epoch_timer, interleave, peak_rss_mib, steady_rate, table
from _images import digits28, shifted_tiles

import kerastrain  # noqa: E402
from kerastrain._keras import keras, tf  # noqa: E402
from kerastrain.models import Head, ModelInputs, cnn  # noqa: E402

BATCH = 32
PLAIN, DEFAULTS = "plain tf_keras float32", "kerastrain defaults"
steady: dict[str, list[float]] = {PLAIN: [], DEFAULTS: []}
choices: list[str] = []


def plain_float32(x, y, epochs: int, seed: int) -> float:
    keras.utils.set_random_seed(seed)
    seconds: list[float] = []
    start = time.perf_counter()
    inputs = keras.Input(x.shape[1:])
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = cnn(ModelInputs(inputs, norm(inputs)), Head(10, "softmax"))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[epoch_timer(seconds)])
    elapsed = time.perf_counter() - start
    steady[PLAIN].append(steady_rate(len(x), seconds))
    keras.backend.clear_session()
    return len(x) * epochs / elapsed


def kerastrain_run(
    x, y, epochs: int, seed: int, precision: str | None = None, test_split: float = 0.0
):
    train = {"epochs": epochs, "early_stopping": None, "verbose": 0}
    if precision:
        train["execution"] = {"mixed_precision": precision}
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y),
            "cnn",
            data_options={"validation_split": 0.0, "test_split": test_split},
            train=train,
            export={"formats": []},
            report={"explain": "none"},
            output_dir=out,
            seed=seed,
        )
    keras.backend.clear_session()
    return result


def defaults(x, y, epochs: int, seed: int) -> float:
    result = kerastrain_run(x, y, epochs, seed)
    steady[DEFAULTS].append(steady_rate(len(x), result.history["epoch_time"]))
    choices.append(", ".join(f"{k}={v.value}" for k, v in result.performance.items()))
    return len(x) * epochs / result.timings["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--guard-epochs", type=int, default=10)
    args = parser.parse_args()
    digits, labels = digits28()
    x, y = shifted_tiles(digits, labels, args.examples, shift=2, seed=0)
    plain_float32(x[:2000], y[:2000], 1, 0)  # warm up TensorFlow's one-time costs
    steady[PLAIN].clear()
    print(f"speed: {len(x):,} images, batch {BATCH}, {args.epochs} epochs, whole training stage")
    medians = table(
        interleave(
            {
                PLAIN: lambda seed: plain_float32(x, y, args.epochs, seed),
                DEFAULTS: lambda seed: defaults(x, y, args.epochs, seed),
            },
            args.repeats,
        )
    )
    print("\nsteady epochs (after the first)")
    steady_medians = table(steady)
    print(f"kerastrain chose: {'; '.join(sorted(set(choices)))}")

    accuracy: dict[str, list[float]] = {"defaults": [], "float32": []}
    for seed in range(args.repeats):
        for name, precision in (("defaults", None), ("float32", "float32")):
            result = kerastrain_run(digits, labels, args.guard_epochs, seed, precision, 0.3)
            accuracy[name].append(result.metrics["test"]["accuracy"])
    print(f"\naccuracy guard: real digits, 30% test, {args.guard_epochs} epochs")
    for name, values in accuracy.items():
        print(
            f"kerastrain {name:<17} test accuracy per seed "
            f"{', '.join(f'{v:.4f}' for v in values)} (median {np.median(values):.4f})"
        )
    gap = 100 * (np.median(accuracy["float32"]) - np.median(accuracy["defaults"]))
    print(f"accuracy guard: float32 minus defaults = {gap:+.2f} points (must be <= 0.5)")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")
    print(
        f"ratio kerastrain defaults / plain float32, whole stage = "
        f"{medians[DEFAULTS] / medians[PLAIN]:.2f} (goal >= 1.8)"
    )
    print(
        f"ratio kerastrain defaults / plain float32, steady epochs = "
        f"{steady_medians[DEFAULTS] / steady_medians[PLAIN]:.2f}"
    )


if __name__ == "__main__":
    main()
