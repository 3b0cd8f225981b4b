"""The cost of kerastrain's default callbacks: `train_model` against plain `fit`.

Both variants train the same MLP (same initial weights, same compiled loss,
metrics and optimizer, same tf.data pipeline, validation every epoch). The
plain variant calls ``model.fit`` with no callbacks; the kerastrain variant
calls `kerastrain.training.train_model` with every callback it adds by default
(learning-rate and throughput logs, the NaN guard, the history backup,
`BackupAndRestore`, early stopping and the best/last checkpoints). Runs are
interleaved (A, B, A, B, ...) and the median of each is reported, by wall
clock and by the process's CPU time (steadier on a machine shared with other
jobs). The callbacks cost a fixed time per epoch (mostly the backup written
by `BackupAndRestore`) and per fit (the final checkpoints), printed as well:
the ratio depends on how long an epoch is.

    PYTHONPATH=. python benchmarks/callbacks.py [--repeats 5] [--epochs 5] [--rows 60000]
                                                [--threads 1]

Goal: ratio (kerastrain / plain) of at least 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from _common import interleave, table

from kerastrain._keras import keras, tf  # noqa: E402
from kerastrain.config import TrainConfig  # noqa: E402
from kerastrain.task import Task  # noqa: E402
from kerastrain.training import compile_model, default_callbacks, train_model  # noqa: E402


def _data(
    rows: int, features: int = 32, batch: int = 64
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features).astype(np.float32)
    y = (x @ w + rng.normal(scale=2.0, size=rows) > 0).astype(np.float32)
    split = int(rows * 0.85)
    train = (
        tf.data.Dataset.from_tensor_slices((x[:split], y[:split]))
        .cache()
        .shuffle(split, seed=0)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = tf.data.Dataset.from_tensor_slices((x[split:], y[split:])).batch(512).cache()
    return train, val


def _model(initial: list[np.ndarray] | None, train: TrainConfig) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    if initial is not None:
        model.set_weights(initial)
    compile_model(model, Task("binary"), train)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant (default 5)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--rows", type=int, default=60000, help="rows of data (default 60000)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads per pool; 1 steadies timings on a shared "
        "machine (default 0: TensorFlow's choice)",
    )
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    train_ds, val_ds = _data(args.rows)
    examples = int(args.rows * 0.85) * args.epochs
    config = TrainConfig(epochs=args.epochs, verbose=0, learning_rate=1e-3)
    initial = _model(None, config).get_weights()
    names = [
        type(cb).__name__
        for cb in default_callbacks(
            config, has_validation=True, run_dir="run", backup_dir="run/backup"
        )
    ]
    print(f"kerastrain default callbacks: {', '.join(names)}")
    print(
        f"{args.rows} rows x 32 features, batch 64, {args.epochs} epochs, MLP 64-64, "
        f"{args.repeats} interleaved runs each, TensorFlow threads: {args.threads or 'default'}\n"
    )

    cpu: dict[str, list[float]] = {"plain fit": [], "kerastrain train_model": []}

    def run(name: str) -> float:
        model = _model(initial, config)
        with tempfile.TemporaryDirectory() as folder:
            start, start_cpu = time.perf_counter(), time.process_time()
            if name == "plain fit":
                model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, verbose=0)
            else:
                result = train_model(
                    model,
                    train_ds,
                    val_ds,
                    config,
                    backup_dir=Path(folder) / "backup",
                    examples_per_epoch=examples // args.epochs,
                )
                assert result.epochs_run == args.epochs, result.stop_reason
            seconds = time.perf_counter() - start
            cpu[name].append(time.process_time() - start_cpu)
        keras.backend.clear_session()
        return examples / seconds

    medians = table(
        interleave({name: (lambda _, name=name: run(name)) for name in cpu}, args.repeats)
    )
    plain, ours = medians["plain fit"], medians["kerastrain train_model"]
    plain_cpu, ours_cpu = (statistics.median(cpu[name]) for name in cpu)
    print(
        f"\nratio kerastrain / plain: {ours / plain:.3f} by wall clock, "
        f"{plain_cpu / ours_cpu:.3f} by CPU time (goal >= 0.95)"
    )
    epoch_plain, epoch_ours = (examples / args.epochs / v for v in (plain, ours))
    print(
        f"extra wall time: {(epoch_ours - epoch_plain) * 1e3:+.0f} ms per epoch of "
        f"{epoch_plain:.2f} s (medians)"
    )


if __name__ == "__main__":
    main()
