"""kerastrain's defaults vs the naive ``model.fit(x, y, batch_size=32)`` on a tabular MLP.

The naive side is what most users write: NumPy arrays straight into
``model.fit`` with Keras's default batch size. kerastrain runs with its
defaults (batch 32, ``steps_per_execution="auto"``, ``mixed_precision="auto"``,
``jit_compile="auto"``); tuning, early stopping and export are off so that both
sides train the same epochs. A and B are interleaved and repeated; the tables
show the median training examples/second of the whole training stage (build,
compile, probes, every epoch) and of the steady epochs after the first
(validation included on both sides), the ratios (goal >= 3), the test
accuracy of each side and the process's peak memory.

Run: python benchmarks/defaults_vs_naive.py [--rows 20000] [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np  # noqa: E402
from _common import epoch_timer, interleave, peak_rss_mib, steady_rate, table

import kerastrain  # noqa: E402
from kerastrain._keras import keras  # noqa: E402

WIDTH, DEPTH = 64, 2
NAIVE, DEFAULTS = "naive model.fit", "kerastrain defaults"
accuracy: dict[str, list[float]] = {NAIVE: [], DEFAULTS: []}
steady: dict[str, list[float]] = {NAIVE: [], DEFAULTS: []}
choices: list[str] = []


def make_data(rows: int, features: int = 32, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=(features, classes)).astype(np.float32)
    return x, (np.tanh(x) @ w).argmax(axis=1).astype(np.int64)


def naive(x, y, epochs: int, seed: int) -> float:
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(seed)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.15, stratify=y, random_state=seed)
    x_tr, x_val, y_tr, y_val = train_test_split(
        x_tr, y_tr, test_size=0.15 / 0.85, stratify=y_tr, random_state=seed
    )
    times: list[float] = []
    start = time.perf_counter()
    norm = keras.layers.Normalization()
    norm.adapt(x_tr)
    inputs = keras.Input(x.shape[1:])
    h = norm(inputs)
    for _ in range(DEPTH):
        h = keras.layers.Dropout(0.1)(keras.layers.Dense(WIDTH, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(int(y.max()) + 1, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(
        x_tr,
        y_tr,
        batch_size=32,
        epochs=epochs,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[epoch_timer(times)],
    )
    elapsed = time.perf_counter() - start
    accuracy[NAIVE].append(model.evaluate(x_te, y_te, verbose=0)[1])
    steady[NAIVE].append(steady_rate(len(x_tr), times))
    keras.backend.clear_session()
    return len(x_tr) * epochs / elapsed


def defaults(x, y, epochs: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y),
            "mlp",
            model_options={"width": WIDTH, "depth": DEPTH, "dropout": 0.1},
            train={"epochs": epochs, "early_stopping": None, "verbose": 0},
            export={"formats": []},
            report={"explain": "none"},
            output_dir=out,
            seed=seed,
        )
    rows = round(len(x) * 0.7)
    accuracy[DEFAULTS].append(result.metrics["test"]["accuracy"])
    steady[DEFAULTS].append(steady_rate(rows, result.history["epoch_time"]))
    choices.append(", ".join(f"{k}={v.value}" for k, v in result.performance.items()))
    keras.backend.clear_session()
    return rows * epochs / result.timings["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = make_data(args.rows)
    naive(x[:2000], y[:2000], 1, 0)  # warm up TensorFlow's one-time costs
    accuracy[NAIVE].clear()
    steady[NAIVE].clear()
    print("whole training stage")
    medians = table(
        interleave(
            {
                NAIVE: lambda seed: naive(x, y, args.epochs, seed),
                DEFAULTS: lambda seed: defaults(x, y, args.epochs, seed),
            },
            args.repeats,
        )
    )
    print("\nsteady epochs (after the first)")
    steady_medians = table(steady)
    for name, values in accuracy.items():
        print(f"{name:<28} test accuracy (median) {np.median(values):.4f}")
    print(f"kerastrain chose: {'; '.join(sorted(set(choices)))}")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")
    print(
        f"ratio kerastrain defaults / naive, whole stage = "
        f"{medians[DEFAULTS] / medians[NAIVE]:.2f} (goal >= 3)"
    )
    print(
        f"ratio kerastrain defaults / naive, steady epochs = "
        f"{steady_medians[DEFAULTS] / steady_medians[NAIVE]:.2f}"
    )


if __name__ == "__main__":
    main()
