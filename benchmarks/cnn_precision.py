"""kerastrain's defaults vs plain float32 tf_keras on a small CNN (28x28 digits).

The plain side is a careful user's float32 code: the same two-convolution
network, a shuffled, batched, prefetched tf.data pipeline, ``model.fit``.
kerastrain runs with its defaults (``mixed_precision="auto"`` picks
``mixed_bfloat16`` on a CPU with AVX512_BF16/AMX, ``steps_per_execution``
and ``jit_compile`` auto). Accuracy guard: the same kerastrain run forced to
float32 on the same split and seed, whose test accuracy the default run must
match within 0.5 point. A and B are interleaved and repeated; medians.

Run: python benchmarks/cnn_precision.py [--epochs 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import interleave, peak_rss_mib, table

import numpy as np  # noqa: E402

import kerastrain  # noqa: E402
from kerastrain._keras import keras, tf  # noqa: E402

BATCH = 32
accuracy: dict[str, list[float]] = {"kerastrain defaults": [], "kerastrain float32": []}
policies: list[str] = []


def digits28():
    """scikit-learn's digits resized to 28x28 (real data, MNIST-sized)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = tf.image.resize(bunch.images[..., None].astype(np.float32), (28, 28)).numpy()
    return x, bunch.target.astype(np.int64)


def plain_float32(x, y, epochs: int, seed: int) -> float:
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train = rng.permutation(len(x))[: round(len(x) * 0.7)]
    start = time.perf_counter()
    norm = keras.layers.Normalization()
    norm.adapt(x[train])
    inputs = keras.Input(x.shape[1:])
    h = norm(inputs)
    for i, filters in enumerate((32, 64)):
        h = keras.layers.MaxPool2D()(keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h))
    h = keras.layers.Dropout(0.25)(keras.layers.Flatten()(h))
    h = keras.layers.Dropout(0.25)(keras.layers.Dense(64, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((x[train], y[train])).shuffle(len(train), seed=seed) \
        .batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model.fit(ds, epochs=epochs, verbose=0)
    elapsed = time.perf_counter() - start
    keras.backend.clear_session()
    return len(train) * epochs / elapsed


def kerastrain_run(x, y, epochs: int, seed: int, precision: str | None) -> float:
    train = {"epochs": epochs, "early_stopping": None, "verbose": 0}
    if precision:
        train["mixed_precision"] = precision
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y), "cnn", data_options={"validation_split": 0.0, "test_split": 0.3},
            train=train, export={"formats": []}, report={"explain": "none"}, output_dir=out,
            seed=seed)
    name = "kerastrain float32" if precision else "kerastrain defaults"
    accuracy[name].append(result.metrics["test"]["accuracy"])
    if not precision:
        policies.append(str(result.config.train.mixed_precision))
    keras.backend.clear_session()
    return round(len(x) * 0.7) * epochs / result.timings["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = digits28()
    plain_float32(x, y, 1, 0)  # warm up TensorFlow's one-time costs
    medians = table(interleave({
        "plain tf_keras float32": lambda seed: plain_float32(x, y, args.epochs, seed),
        "kerastrain defaults": lambda seed: kerastrain_run(x, y, args.epochs, seed, None),
    }, args.repeats))
    for seed in range(args.repeats):
        kerastrain_run(x, y, args.epochs, seed, "float32")
    for name, values in accuracy.items():
        print(f"{name:<28} test accuracy per seed {', '.join(f'{v:.4f}' for v in values)}")
    gap = 100 * (np.median(accuracy["kerastrain float32"]) - np.median(accuracy["kerastrain defaults"]))
    print(f"default precision chosen: {', '.join(sorted(set(policies)))}")
    print(f"accuracy guard: float32 minus defaults = {gap:+.2f} points (must be <= 0.5)")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")
    ratio = medians["kerastrain defaults"] / medians["plain tf_keras float32"]
    print(f"ratio kerastrain defaults / plain float32 = {ratio:.2f} (goal >= 1.8)")


if __name__ == "__main__":
    main()
