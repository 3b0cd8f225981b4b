"""Text classification on installed libraries' docstrings (issue 22).

Which of numpy, pandas, scikit-learn and SciPy does a docstring (its first
600 characters) come from? Three sides on one split (kerastrain's, seeded):

- TF-IDF (words and bigrams) + logistic regression, fitted on the training
  rows: the baseline;
- kerastrain's `transformer` trained from scratch from a DataFrame text
  column (`fit_pipeline`), test accuracy and the exported SavedModel's
  parity on raw strings;
- the plain tf_keras Transformer of the Keras text-classification tutorial
  (post-norm blocks, as many as kerastrain's, key width d_model / heads as
  kerastrain's, ReLU MLP, no padding mask, no final norm, fixed-length
  padding), for speed: kerastrain's model (built and compiled by kerastrain,
  fed raw strings padded per batch by its own pipeline) and the tutorial's
  (the same rows' ids padded to max_length) train one epoch each in turn,
  `--repeats` times, in this process, after one untimed epoch each; both
  report real (non-padding) tokens per second (validation excluded) and the
  model FLOPs utilisation against a measured float32 matmul peak.
  `--cpu-time` holds TensorFlow to one thread and times the epochs in CPU
  seconds, for a steadier ratio on a shared machine.

``--tokenizer`` picks `data_options.tokenizer` (`word`, `subword`: a
WordPiece vocabulary through tensorflow-text, or `character`);
``--max-length`` caps the transformer's `max_length` (characters make rows
several times longer); ``--no-tutorial`` skips the speed comparison.

Usage:
    python benchmarks/text.py --epochs 20
    python benchmarks/text.py --epochs 6 --tokenizer subword --no-tutorial
    python benchmarks/text.py --epochs 3 --repeats 5 --cpu-time
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common  # noqa: E402, F401  (sets TF's log level)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LIBRARIES = ("numpy", "pandas", "sklearn", "scipy")
MAX_CHARS = 600


def docstrings() -> pd.DataFrame:
    """One row per distinct docstring of a public function or class defined
    in one of `LIBRARIES` (a docstring found in two libraries is dropped)."""
    found: dict[str, set[str]] = {}
    for library in LIBRARIES:
        root = importlib.import_module(library)
        modules = [root]
        for info in pkgutil.walk_packages(root.__path__, f"{library}."):
            if any(part.startswith("_") or part in ("tests", "testing") for part in
                   info.name.split(".")[1:]):  # fmt: skip
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except Exception:  # optional dependencies missing: skip the module
                continue
        for module in modules:
            for name, obj in vars(module).items():
                if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                if not str(getattr(obj, "__module__", "")).startswith(library):
                    continue
                doc = inspect.getdoc(obj)
                if doc and len(doc) >= 40:
                    found.setdefault(doc[:MAX_CHARS], set()).add(library)
    # Sorted: the order the modules yield them in varies with PYTHONHASHSEED,
    # and a seeded split of a reordered frame is another split.
    rows = sorted((text, next(iter(libs))) for text, libs in found.items() if len(libs) == 1)
    return pd.DataFrame(rows, columns=["text", "library"])


def tutorial_model(
    vocabulary: int, length: int, d: int, heads: int, ff: int, classes: int, blocks: int
):
    """The Keras tutorial's Transformer classifier ("Text classification with
    Transformer"), in tf_keras, with ``blocks`` of its post-norm block (the
    tutorial has one) so that both sides do the same work."""
    from kerastrain._keras import keras, tf

    class TokenAndPosition(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.token = keras.layers.Embedding(vocabulary, d)
            self.position = keras.layers.Embedding(length, d)

        def call(self, x):
            return self.token(x) + self.position(tf.range(tf.shape(x)[-1]))

    inputs = keras.Input((length,), dtype="int64")
    x = TokenAndPosition()(inputs)
    for _ in range(blocks):
        attention = keras.layers.MultiHeadAttention(heads, d // heads)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x + keras.layers.Dropout(0.1)(attention))
        h = keras.layers.Dense(ff, activation="relu")(x)
        h = keras.layers.Dense(d)(h)
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x + keras.layers.Dropout(0.1)(h))
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(20, activation="relu")(x)
    x = keras.layers.Dropout(0.1)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _interleaved_speed(result, prepared, texts, labels, length, tokens_per_row, args):
    """Real tokens/s of kerastrain's transformer and of the tutorial model,
    one training epoch each in turn (after one untimed epoch each), in this
    process: kerastrain's model built and compiled by kerastrain
    (`build_compiled_model`, the precision its run chose) and fed by its own
    pipeline (raw strings, padded per batch; `make_datasets`), the tutorial's
    on the same rows' ids padded to ``length``; both batch 32, plain
    ``model.fit`` (no validation pass), the same epoch order."""
    from _common import epoch_timer, interleave

    from kerastrain._keras import tf
    from kerastrain.training import build_compiled_model, make_datasets
    from kerastrain.training.flops import flops_per_token
    from kerastrain.training.throughput import device_peak_flops

    strategy = tf.distribute.get_strategy()
    train = result.config.train
    chosen = result.performance["mixed_precision"].value
    train = train.replace(execution=train.execution.replace(mixed_precision=chosen))
    ours = build_compiled_model(
        train, prepared, strategy, model_spec="transformer",
        model_options=result.config.model_options, batch_size=32,
    )  # fmt: skip
    ours_data, _ = make_datasets(train, prepared, strategy, batch_size=32, seed=args.seed)
    tokenize = result.model.get_layer("tokenize_text")
    ids = tokenize(np.asarray(texts, str)).numpy()[:, :length]
    ids = np.pad(ids, ((0, 0), (0, length - ids.shape[1])))
    d, heads = args.d_model, 4
    tutorial = tutorial_model(tokenize.vocabulary_size(), length, d, heads, 4 * d, 4, args.layers)

    def epoch(model, *data, **kwargs):
        times: list[float] = []
        if args.cpu_time:  # the process's CPU seconds: the work, not the wait for a core
            start = time.process_time()
            model.fit(*data, epochs=1, verbose=0, **kwargs)
            times.append(time.process_time() - start)
        else:
            model.fit(*data, epochs=1, verbose=0, callbacks=[epoch_timer(times)], **kwargs)
        return tokens_per_row * len(texts) / times[0]

    sides = {
        "kerastrain": lambda _: epoch(ours, ours_data),
        "tutorial": lambda _: epoch(tutorial, ids, labels, batch_size=32),
    }
    interleave(sides, 1)  # untimed: traces the graphs
    rates = interleave(sides, args.repeats)
    per_token = flops_per_token(ours)
    return rates["kerastrain"], rates["tutorial"], per_token, device_peak_flops("float32")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", choices=("word", "subword", "character"), default="word")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--no-tutorial", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="TensorFlow on one thread, epochs timed in process CPU seconds (steadier on a "
        "shared machine; the tokens/s are then per core)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        from kerastrain._keras import tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    import kerastrain
    from kerastrain.config import DataConfig
    from kerastrain.data.prepare import prepare_data

    frame = docstrings()
    print(f"{len(frame)} docstrings: {frame['library'].value_counts().to_dict()}")
    options = {
        "target": "library",
        "text_columns": ["text"],
        "test_split": 0.25,
        "tokenizer": args.tokenizer,
    }
    prepared = prepare_data(frame, DataConfig(**options), args.seed)
    train, test = prepared.splits.train, prepared.splits.test
    texts, labels = frame["text"].to_numpy(), prepared.y

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    baseline = LogisticRegression(max_iter=2000, C=10.0)
    baseline.fit(tfidf.fit_transform(texts[train]), labels[train])
    tfidf_accuracy = float((baseline.predict(tfidf.transform(texts[test])) == labels[test]).mean())

    d, heads = args.d_model, 4
    run_dir = Path(tempfile.mkdtemp(prefix="kerastrain-text-bench-"))
    start = time.perf_counter()
    result = kerastrain.fit_pipeline(
        frame,
        "transformer",
        seed=args.seed,
        data_options=options,
        model_options={
            "layers": args.layers,
            "heads": heads,
            "d_model": d,
            "dropout": 0.1,
            "max_length": args.max_length,
        },
        train={"epochs": args.epochs, "batch_size": 32, "verbose": 0},
        export={"formats": ["savedmodel"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(run_dir / "run"),
    )
    seconds = time.perf_counter() - start
    (column,) = [c for c in prepared.encoding.columns if c.kind == "text"]
    length = int(result.model.get_layer("token_embedding").max_length)
    tokens_per_row = float(np.minimum(column.lengths, length).mean())
    rates = result.history.get("examples_per_second", [])
    in_pipeline = tokens_per_row * float(np.median(rates[1:] or rates))

    print(f"TF-IDF + logistic regression, test accuracy: {tfidf_accuracy:.3f}")
    print(
        f"kerastrain transformer ({args.layers} layers, d_model {d}, {args.tokenizer} tokens, "
        f"vocabulary {result.model.get_layer('tokenize_text').vocabulary_size():,}, "
        f"{np.mean(column.lengths):.1f} tokens a training row), test accuracy: "
        f"{result.metrics['test']['accuracy']:.3f} ({seconds:.0f} s in all, "
        f"{len(result.history['loss'])} epochs, "
        f"{result.model.count_params():,} parameters, max_length {length})"
    )
    print(
        f"SavedModel on raw strings, max |difference|: {result.metrics['savedmodel']['max_abs_diff']:.2g}"
    )
    if args.no_tutorial:
        return

    ours, theirs, per_token, peak = _interleaved_speed(
        result, prepared, texts[train], labels[train], length, tokens_per_row, args
    )
    mfu = lambda rate: 3 * per_token * rate / peak  # noqa: E731
    print(
        f"real tokens/s in training, interleaved, median of {args.repeats}: kerastrain "
        f"{np.median(ours):,.0f} ({', '.join(f'{r:,.0f}' for r in ours)}), tutorial "
        f"{np.median(theirs):,.0f} ({', '.join(f'{r:,.0f}' for r in theirs)}), ratio "
        f"{np.median(ours) / np.median(theirs):.2f} (per round: "
        f"{', '.join(f'{a / b:.2f}' for a, b in zip(ours, theirs))})"
    )
    print(
        f"MFU ({3 * per_token:,.0f} training FLOPs per token over a measured float32 matmul peak "
        f"of {peak / 1e9:,.1f} GFLOP/s): kerastrain {mfu(np.median(ours)):.2%}, tutorial "
        f"{mfu(np.median(theirs)):.2%}; fit_pipeline's own steady epochs (not interleaved): "
        f"{in_pipeline:,.0f} tokens/s, result.performance mfu "
        f"{result.performance['mfu'].value:.2%}"
    )


if __name__ == "__main__":
    main()
