"""kerastrain's training stage vs the plain tf_keras code a careful user writes.

Same data, same model, same epochs, batch size, optimizer and validation
split, and the same execution settings: float32, one step per call, no XLA
(kerastrain's "auto" choices are measured by ``defaults_vs_naive.py`` and
``cnn_precision.py``); tuning, compression and export off; kerastrain keeps
its default callbacks (logs, NaN guard, backups, best and last checkpoints). Each side builds, compiles and
fits (kerastrain's "train" stage timing; the plain side is timed around the
same three steps). A and B are interleaved and repeated; the table shows the
median examples/second of each and the ratio (goal: >= 0.98).

Run: python benchmarks/overhead.py [--rows 20000] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np  # noqa: E402
from _common import interleave, table

import kerastrain  # noqa: E402
from kerastrain._keras import keras, tf  # noqa: E402

BATCH, WIDTH, DEPTH = 64, 128, 2


def make_data(rows: int, features: int = 32, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=(features, classes)).astype(np.float32)
    return x, (x @ w).argmax(axis=1).astype(np.int64)


def plain_tf_keras(x, y, epochs: int, seed: int) -> float:
    """What a careful user writes by hand: split, adapt, tf.data, fit."""
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.15, stratify=y, random_state=seed
    )
    start = time.perf_counter()
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x_train)
    inputs = keras.Input(x.shape[1:])
    h = norm(inputs)
    for _ in range(DEPTH):
        h = keras.layers.Dropout(0.1)(keras.layers.Dense(WIDTH, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(int(y.max()) + 1, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=seed)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((x_val, y_val))
        .batch(BATCH)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    elapsed = time.perf_counter() - start
    keras.backend.clear_session()
    return len(x_train) * epochs / elapsed


def with_kerastrain(x, y, epochs: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = kerastrain.fit_pipeline(
            (x, y),
            "mlp",
            model_options={"width": WIDTH, "depth": DEPTH, "dropout": 0.1},
            data_options={"validation_split": 0.15, "test_split": 0.0},
            train={
                "epochs": epochs,
                "batch_size": BATCH,
                "early_stopping": None,
                "verbose": 0,
                "execution": {
                    "mixed_precision": "float32",
                    "steps_per_execution": 1,
                    "jit_compile": False,
                },
            },
            export={"formats": []},
            output_dir=out,
            seed=seed,
        )
        rows = round(len(x) * 0.85)
        elapsed = result.timings["train"]
    keras.backend.clear_session()
    return rows * epochs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = make_data(args.rows)
    plain_tf_keras(x, y, 1, 0)  # warm up TensorFlow's one-time costs for both sides
    medians = table(
        interleave(
            {
                "plain tf_keras": lambda seed: plain_tf_keras(x, y, args.epochs, seed),
                "kerastrain": lambda seed: with_kerastrain(x, y, args.epochs, seed),
            },
            args.repeats,
        )
    )
    ratio = medians["kerastrain"] / medians["plain tf_keras"]
    print(f"ratio kerastrain / plain = {ratio:.3f} (goal >= 0.98)")


if __name__ == "__main__":
    main()
