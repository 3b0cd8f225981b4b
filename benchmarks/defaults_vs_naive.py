"""kerastrain's defaults vs the naive ``model.fit(x, y, batch_size=32)`` on a tabular MLP.

The naive side is what most users write: NumPy arrays straight into
``model.fit`` with Keras's default batch size. kerastrain runs with its
defaults (batch 32, ``steps_per_execution="auto"``, ``mixed_precision="auto"``,
``jit_compile="auto"``); tuning, early stopping and export are off so that both
sides train the same epochs. A and B are interleaved and repeated; the table
shows the median training examples/second and the ratio (goal >= 3), plus the
test accuracy of each side and the process's peak memory.

Run: python benchmarks/defaults_vs_naive.py [--rows 20000] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import interleave, peak_rss_mib, table

import numpy as np  # noqa: E402

import kerastrain  # noqa: E402
from kerastrain._keras import keras  # noqa: E402

WIDTH, DEPTH = 64, 2
accuracy: dict[str, list[float]] = {"naive model.fit": [], "kerastrain defaults": []}


def make_data(rows: int, features: int = 32, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=(features, classes)).astype(np.float32)
    return x, (np.tanh(x) @ w).argmax(axis=1).astype(np.int64)


def naive(x, y, epochs: int, seed: int) -> float:
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(seed)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    x_tr, x_val, y_tr, y_val = train_test_split(x_tr, y_tr, test_size=0.15 / 0.7, stratify=y_tr,
                                                random_state=seed)
    start = time.perf_counter()
    norm = keras.layers.Normalization()
    norm.adapt(x_tr)
    inputs = keras.Input(x.shape[1:])
    h = norm(inputs)
    for _ in range(DEPTH):
        h = keras.layers.Dropout(0.1)(keras.layers.Dense(WIDTH, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(int(y.max()) + 1, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x_tr, y_tr, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
    elapsed = time.perf_counter() - start
    accuracy["naive model.fit"].append(model.evaluate(x_te, y_te, verbose=0)[1])
    keras.backend.clear_session()
    return len(x_tr) * epochs / elapsed


def defaults(x, y, epochs: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y), "mlp", model_options={"width": WIDTH, "depth": DEPTH, "dropout": 0.1},
            train={"epochs": epochs, "early_stopping": None, "verbose": 0},
            export={"formats": []}, report={"explain": "none"}, output_dir=out, seed=seed)
    accuracy["kerastrain defaults"].append(result.metrics["test"]["accuracy"])
    keras.backend.clear_session()
    return round(len(x) * 0.7) * epochs / result.timings["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = make_data(args.rows)
    naive(x[:2000], y[:2000], 1, 0)  # warm up TensorFlow's one-time costs
    accuracy["naive model.fit"].clear()
    medians = table(interleave({
        "naive model.fit": lambda seed: naive(x, y, args.epochs, seed),
        "kerastrain defaults": lambda seed: defaults(x, y, args.epochs, seed),
    }, args.repeats))
    for name, values in accuracy.items():
        print(f"{name:<28} test accuracy (median) {np.median(values):.4f}")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")
    ratio = medians["kerastrain defaults"] / medians["naive model.fit"]
    print(f"ratio kerastrain defaults / naive = {ratio:.2f} (goal >= 3)")


if __name__ == "__main__":
    main()
