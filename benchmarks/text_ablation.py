"""Where a small Transformer's CPU training step goes (issue 22, speed).

The network of kerastrain's `transformer` (2 pre-norm blocks, d_model 64,
4 heads, MLP 256, final norm, masked mean) is rebuilt on token ids with one
difference at a time from the Keras tutorial's, and each variant's training
step is timed against the tutorial model's on the same ids (the library
docstrings of `benchmarks/text.py`, padded to 96, batch 32), round-robin in
one process. The timer is the process's CPU time with TensorFlow held to one
thread, so that on a machine shared with other jobs the figure is the work
of the step rather than the wait for a core; the minimum over the rounds is
reported beside the median.

Usage:
    python benchmarks/text_ablation.py [--rounds 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common  # noqa: E402, F401  (sets TF's log level)
import numpy as np  # noqa: E402

LENGTH, WIDTH, HEADS, BATCH = 96, 64, 4, 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    from kerastrain._keras import keras, tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from text import docstrings, tutorial_model

    from kerastrain.config import DataConfig
    from kerastrain.data import layers
    from kerastrain.data.prepare import prepare_data
    from kerastrain.data.text import tokenizer_layer

    frame = docstrings()
    prepared = prepare_data(
        frame, DataConfig(target="library", text_columns=["text"], test_split=0.25), 0
    )
    (column,) = [c for c in prepared.encoding.columns if c.kind == "text"]
    tokenize = tokenizer_layer(column.vocabulary, column.tokenizer, "tokenize")
    train = prepared.splits.train
    ids = tokenize(np.asarray(frame["text"].to_numpy()[train], str)).numpy()[:, :LENGTH]
    ids = np.pad(ids, ((0, 0), (0, LENGTH - ids.shape[1])))
    labels = prepared.y[train]
    vocabulary = len(column.vocabulary) + 2

    def encoder(norm="moments", act="gelu", attention_dropout=0.0, mask=True):
        """kerastrain's network on ids, with the named differences."""
        inputs = keras.Input((LENGTH,), dtype="int64")
        x = layers.TokenEmbedding(vocabulary, WIDTH, LENGTH)(inputs)
        x = layers.PositionEmbedding(LENGTH)(x)
        x = keras.layers.Dropout(0.1)(x)
        padding = layers.PaddingMask(LENGTH)(inputs) if mask else None
        norm_layer = (
            layers.LayerNorm
            if norm == "moments"
            else lambda: keras.layers.LayerNormalization(epsilon=1.001e-5)  # fused from here
        )
        for _ in range(2):
            h = norm_layer()(x)
            h = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS, dropout=attention_dropout)(
                h, h, attention_mask=padding
            )
            x = keras.layers.Add()([x, keras.layers.Dropout(0.1)(h)])
            h = keras.layers.Dense(4 * WIDTH, activation=act)(norm_layer()(x))
            h = keras.layers.Dense(WIDTH)(h)
            x = keras.layers.Add()([x, keras.layers.Dropout(0.1)(h)])
        x = norm_layer()(x)
        if mask:
            x = layers.MaskedMeanPool()([x, padding])
        else:
            x = keras.layers.GlobalAveragePooling1D()(x)
        x = keras.layers.Dropout(0.1)(x)
        model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    variants = {
        "tutorial (post-norm, ReLU, no mask, no attention dropout)": lambda: tutorial_model(
            vocabulary, LENGTH, WIDTH, HEADS, 4 * WIDTH, 4, 2
        ),
        "kerastrain before (attention dropout 0.1)": lambda: encoder(attention_dropout=0.1),
        "  fused LayerNormalization (epsilon 1.001e-5)": lambda: encoder(
            norm="fused", attention_dropout=0.1
        ),
        "kerastrain now (no attention dropout)": lambda: encoder(),
        "  now, ReLU": lambda: encoder(act="relu"),
        "  now, ReLU, no padding mask": lambda: encoder(act="relu", mask=False),
    }
    models = {name: build() for name, build in variants.items()}
    rows = args.steps * BATCH
    for model in models.values():  # trace
        model.fit(ids[: 2 * BATCH], labels[: 2 * BATCH], batch_size=BATCH, verbose=0)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.process_time()
            model.fit(ids[:rows], labels[:rows], batch_size=BATCH, verbose=0, shuffle=False)
            times[name].append((time.process_time() - start) / args.steps * 1000)
    base = min(next(iter(times.values())))
    print(f"CPU ms per training step, one thread, {args.rounds} rounds of {args.steps} steps")
    for name, values in times.items():
        print(
            f"{name:60s} min {min(values):6.1f}  median {statistics.median(values):6.1f}  "
            f"tutorial / this (min) {base / min(values):.2f}"
        )


if __name__ == "__main__":
    main()
