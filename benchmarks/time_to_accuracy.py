"""Time to accuracy: how long a user waits for a model that is good enough.

Three contenders, run interleaved in one process on the same rows and the
same test split, the same model architecture (kerastrain's own factories)
and the same number of epochs:

- ``naive``: ``model.fit(x, y, batch_size=32, epochs=N, validation_split=...)``
  on NumPy arrays, Adam at its default rate, as most users write it;
- ``careful``: a careful user: `tf.data` (cached, shuffled, batch 256,
  prefetch), Adam at 3e-3 (the default 1e-3 scaled by sqrt(256/32) and
  rounded; not swept), the same epochs;
- ``kerastrain``: ``fit_pipeline`` with its defaults (early stopping,
  export, verification, explanation, report all on), the same epochs.

"Time to target" is the wall time from the call until the model first
reaches the target accuracy on the test split. One callback, the same for
all three, evaluates the test split at each epoch's end and subtracts its
own time (kerastrain has no public callbacks option: the benchmark adds the
callback to the list `kerastrain.pipeline.training_callbacks` returns). The
target is the naive fit's median final test accuracy unless ``--target`` is
given; the rows keep every side's whole wall time too, kerastrain's with its
evaluation, export, verification, explanation and report, and each stage's
share of it (`result.timings`).

Workloads:

- ``table``: 200,000 generated rows x 32 features, 4 classes, MLP 64-64;
- ``digits``: scikit-learn's digits at 28x28 tiled with shifted copies
  (`_images.py`), kerastrain's ``cnn``;
- ``resnet``: generated 32x32 colour images (10 classes of oriented
  gratings under noise), kerastrain's ``resnet`` (width 16, 2 stages).

Run: python benchmarks/time_to_accuracy.py [--quick] [--workloads table digits resnet]
     [--repeats 3] [--epochs N] [--rows N] [--target 0.9] [--variant LABEL "{train options}" ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from typing import Any

import numpy as np
from _common import peak_rss_mib
from _images import digits28, shifted_tiles

import kerastrain  # noqa: E402
import kerastrain.pipeline  # noqa: E402
from kerastrain._keras import keras, tf  # noqa: E402
from kerastrain.models import Head, ModelInputs, cnn, mlp, resnet  # noqa: E402

NAIVE, CAREFUL, KERASTRAIN = "naive", "careful", "kerastrain"
VAL, TEST = 0.15, 0.15
CAREFUL_BATCH, CAREFUL_LR = 256, 3e-3


# --------------------------------------------------------------------------- the workloads
def table_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 32)).astype(np.float32)
    w = rng.normal(size=(32, 4)).astype(np.float32)
    return x, (np.tanh(x) @ w).argmax(axis=1).astype(np.int64)


def digits_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits28()
    return shifted_tiles(x, y, rows, shift=2, seed=seed)


def grating_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32x32x3 images: class k is a grating at angle k*18 degrees with a random
    phase, frequency jitter and colour, under Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 32.0
    angle = y * np.pi / 10 + rng.normal(0, 0.08, rows)
    freq = rng.uniform(3.0, 5.0, rows)
    phase = rng.uniform(0, 2 * np.pi, rows)
    u = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(2 * np.pi * freq[:, None, None] * u + phase[:, None, None])
    colour = rng.uniform(0.3, 1.0, (rows, 1, 1, 3))
    x = 0.5 + 0.4 * wave[..., None] * colour + rng.normal(0, 0.35, (rows, 32, 32, 3))
    return (255 * np.clip(x, 0, 1)).astype(np.float32), y.astype(np.int64)


WORKLOADS: dict[str, dict[str, Any]] = {
    "table": dict(
        data=table_data,
        rows=200_000,
        quick_rows=20_000,
        epochs=10,
        factory=mlp,
        model="mlp",
        options={"width": 64, "depth": 2, "dropout": 0.1},
    ),
    "digits": dict(
        data=digits_data,
        rows=20_000,
        quick_rows=3_000,
        epochs=10,
        factory=cnn,
        model="cnn",
        options={},
    ),
    "resnet": dict(
        data=grating_data,
        rows=6_000,
        quick_rows=1_500,
        epochs=8,
        factory=resnet,
        model="resnet",
        options={"width": 16, "depth": 2, "blocks": 1},
    ),
}


# --------------------------------------------------------------------------- measuring
class TestAccuracy(keras.callbacks.Callback):
    """At each epoch's end: the test accuracy, and the wall time since `start`
    less the time these evaluations took."""

    kerastrain_step_safe = True

    def outcome(self) -> dict[str, Any]:
        """The contender's curve, final test accuracy, wall time since `start`
        and the time spent evaluating."""
        return {
            "curve": self.curve,
            "final": self.curve[-1][2],
            "wall": time.perf_counter() - self.start,
            "eval": self.evaluating,
        }

    def __init__(self, x: np.ndarray, y: np.ndarray, start: float):
        super().__init__()
        self.x, self.y, self.start = x, y, start
        self.evaluating = 0.0
        self.curve: list[tuple[float, int, float]] = []  # (seconds, epoch, accuracy)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        begin = time.perf_counter()
        probabilities = self.model.predict(self.x, batch_size=2048, verbose=0)
        accuracy = float(np.mean(probabilities.argmax(axis=-1) == self.y))
        now = time.perf_counter()
        self.curve.append((begin - self.start - self.evaluating, epoch + 1, accuracy))
        self.evaluating += now - begin


def splits(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """One shuffle, then [train | validation | test] in that order: naive's
    `validation_split` takes the last rows before the test, and kerastrain's
    `split="time"` keeps the order, so all three see the same three splits."""
    order = np.random.default_rng(123).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(round(TEST * len(x)))
    n_val = int(round(VAL * len(x)))
    n_fit = len(x) - n_test
    return {
        "all": (x, y),
        "fit": (x[:n_fit], y[:n_fit]),  # train + validation
        "train": (x[: n_fit - n_val], y[: n_fit - n_val]),
        "val": (x[n_fit - n_val : n_fit], y[n_fit - n_val : n_fit]),
        "test": (x[n_fit:], y[n_fit:]),
    }


def keras_model(spec: dict[str, Any], x_train: np.ndarray, classes: int) -> keras.Model:
    """The architecture kerastrain builds, behind an adapted `Normalization`."""
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x_train[:20000])
    inputs = keras.Input(x_train.shape[1:])
    return spec["factory"](
        ModelInputs(inputs, norm(inputs)), Head(classes, "softmax"), **spec["options"]
    )


def run_naive(spec, data, epochs: int, seed: int) -> dict[str, Any]:
    keras.utils.set_random_seed(seed)
    x_fit, y_fit = data["fit"]
    probe = TestAccuracy(*data["test"], start=time.perf_counter())
    model = keras_model(spec, data["train"][0], int(y_fit.max()) + 1)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(
        x_fit,
        y_fit,
        batch_size=32,
        epochs=epochs,
        validation_split=VAL / (1 - TEST),
        verbose=0,
        callbacks=[probe],
    )
    return probe.outcome()


def run_careful(spec, data, epochs: int, seed: int) -> dict[str, Any]:
    keras.utils.set_random_seed(seed)
    probe = TestAccuracy(*data["test"], start=time.perf_counter())
    x_tr, y_tr = data["train"]
    model = keras_model(spec, x_tr, int(y_tr.max()) + 1)
    model.compile(
        keras.optimizers.Adam(CAREFUL_LR), "sparse_categorical_crossentropy", ["accuracy"]
    )

    def feed(x: np.ndarray, y: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(CAREFUL_BATCH).prefetch(tf.data.AUTOTUNE)

    model.fit(
        feed(x_tr, y_tr, True),
        validation_data=feed(*data["val"], False),
        epochs=epochs,
        verbose=0,
        callbacks=[probe],
    )
    return probe.outcome()


def run_kerastrain(spec, data, epochs: int, seed: int, train: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    probe = TestAccuracy(*data["test"], start=start)
    original = kerastrain.pipeline.training_callbacks
    kerastrain.pipeline.training_callbacks = lambda *a, **k: [*original(*a, **k), probe]
    try:
        with tempfile.TemporaryDirectory() as out:
            result = kerastrain.fit_pipeline(
                data["all"],
                spec["model"],
                model_options=spec["options"],
                data_options={"split": "time", "validation_split": VAL, "test_split": TEST},
                train={"epochs": epochs, "verbose": 0, **train},
                output_dir=out,
                seed=seed,
            )
    finally:
        kerastrain.pipeline.training_callbacks = original
    wall = time.perf_counter() - start
    return {
        "curve": probe.curve,
        "final": float(result.metrics["test"]["accuracy"]),
        "wall": wall,
        "eval": probe.evaluating,
        "timings": dict(result.timings),
        "epochs_run": len(probe.curve),
        "choices": {k: getattr(v, "value", v) for k, v in result.performance.items()},
    }


def reached(curve: list[tuple[float, int, float]], target: float) -> tuple[float, int] | None:
    for seconds, epoch, accuracy in curve:
        if accuracy >= target - 1e-9:
            return seconds, epoch
    return None


def median_or_none(values: list[float | None]) -> float | None:
    """The median when most runs reached the target, else None."""
    hits = [v for v in values if v is not None]
    return statistics.median(hits) if len(hits) * 2 > len(values) else None


def benchmark(name: str, spec: dict[str, Any], args: argparse.Namespace) -> None:
    rows = args.rows or (spec["quick_rows"] if args.quick else spec["rows"])
    epochs = args.epochs or (2 if args.quick else spec["epochs"])
    data = splits(*spec["data"](rows))
    sides = {
        NAIVE: lambda seed: run_naive(spec, data, epochs, seed),
        CAREFUL: lambda seed: run_careful(spec, data, epochs, seed),
    }
    for label, train in args.variants:
        sides[label] = lambda seed, train=train: run_kerastrain(spec, data, epochs, seed, train)
    names = list(sides)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in names}
    for repeat in range(args.repeats):
        for side in names if repeat % 2 == 0 else reversed(names):
            runs[side].append(sides[side](repeat))
            keras.backend.clear_session()
            done = runs[side][-1]
            print(f"  [{name}] {side} seed {repeat}: final {done['final']:.4f}, whole "
                  f"{done['wall'] - done['eval']:.1f} s, curve "
                  + ", ".join(f"{a:.3f}@{t:.1f}s" for t, _, a in done["curve"]), flush=True)  # fmt: skip
    finals = {side: [r["final"] for r in runs[side]] for side in names}
    target = args.target if args.target is not None else statistics.median(finals[NAIVE])
    print(f"\n== {name}: {rows:,} rows, {epochs} epochs, {args.repeats} repeats "
          f"(seeds 0..{args.repeats - 1}); target test accuracy {target:.4f}"
          f"{' (given)' if args.target is not None else ' (naive median final)'}")  # fmt: skip
    width = max(len(n) for n in names) + 2
    print(f"{'side':<{width}}{'to target s':>12}{'epochs':>8}{'final acc':>11}{'whole s':>10}   "
          "per seed: (seconds to target, final accuracy)")  # fmt: skip
    medians: dict[str, dict[str, Any]] = {}
    for side in names:
        hits = [reached(r["curve"], target) for r in runs[side]]
        seconds = median_or_none([h[0] if h else None for h in hits])
        epochs_to = median_or_none([h[1] if h else None for h in hits])
        wall = statistics.median(r["wall"] - r["eval"] for r in runs[side])
        medians[side] = {"seconds": seconds, "wall": wall}
        per_seed = ", ".join(
            f"({h[0]:.1f}, {r['final']:.4f})" if h else f"(-, {r['final']:.4f})"
            for h, r in zip(hits, runs[side])
        )
        shown = f"{seconds:.1f}" if seconds is not None else "not reached"
        shown_epochs = f"{epochs_to:.1f}" if epochs_to is not None else "-"
        print(f"{side:<{width}}{shown:>12}{shown_epochs:>8}{statistics.median(finals[side]):>11.4f}"
              f"{wall:>10.1f}   {per_seed}")  # fmt: skip
    for label, _ in args.variants:
        print(f"-- {label}")
        kt = medians[label]["seconds"]
        for other in (NAIVE, CAREFUL):
            theirs = medians[other]["seconds"]
            ratio = f"{theirs / kt:.2f}" if kt and theirs else "n/a (a side did not reach it)"
            print(f"ratio {other} / {label}, time to target: {ratio}; whole wall time: "
                  f"{medians[other]['wall'] / medians[label]['wall']:.2f}")  # fmt: skip
        gap = (statistics.median(finals[label]) - statistics.median(finals[NAIVE])) * 100
        print(f"final accuracy {label} - naive: {gap:+.2f} points (goal >= -0.3)")
        shares: dict[str, list[float]] = {}
        for r in runs[label]:
            whole = r["wall"] - r["eval"]
            for stage, seconds in r["timings"].items():
                shares.setdefault(stage, []).append(seconds / whole)
        print("stage shares (median, of the whole wall time): " + ", ".join(
            f"{stage} {statistics.median(v) * 100:.0f}%" for stage, v in shares.items()))  # fmt: skip
        choices = runs[label][0]["choices"]
        milestones = choices.pop("milestones", None)
        print(f"epochs run: {[r['epochs_run'] for r in runs[label]]}; chose: {choices}")
        print(f"milestones (validation accuracy: seconds of epochs), seed 0: {milestones}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 2 epochs, 1 repeat")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="replaces each workload's")
    parser.add_argument("--rows", type=int, default=None, help="replaces each workload's")
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("LABEL", "TRAIN"),
        help="a kerastrain side with these train options (a Python dict), e.g. "
        "auto-batch \"{'batch_size': 'auto'}\"; repeatable. Defaults to kerastrain \"{}\"",
    )
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    # A benchmark's own command line: the dicts are evaluated as Python.
    args.variants = [
        (label, eval(text, {})) for label, text in args.variant or [(KERASTRAIN, "{}")]
    ]
    logging.getLogger("kerastrain").setLevel(logging.WARNING)
    tf.get_logger().setLevel(logging.ERROR)
    warm = splits(*table_data(2000))  # TensorFlow's one-time costs, outside every side
    run_naive(WORKLOADS["table"], warm, 1, 0)
    keras.backend.clear_session()
    for name in args.workloads:
        benchmark(name, WORKLOADS[name], args)
    print(f"\npeak resident memory: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
