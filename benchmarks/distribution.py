"""Distribution benchmark: data-parallel throughput and the cost of a launch.

1. Training throughput of the same model and the same per-replica batch on
   one device vs `MirroredStrategy` over two: two logical CPU devices on a
   CPU-only machine; on a GPU machine one GPU vs all GPUs (and vs the CPU).
   Reported as steps/s and examples/s, and as ratios to one device.
2. The start-up cost of a 2-worker `kerastrain launch` of a tiny config vs the
   same config in one process (`kerastrain run`): wall seconds of each
   (both start a fresh Python), and their ratio.

Run (it splits the CPU into logical devices itself, so run it as a script):
    python benchmarks/distribution.py
    python benchmarks/distribution.py --steps 60 --repeats 3 --json out.json
The same command runs unchanged on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tensorflow as tf  # noqa: E402

GPUS = tf.config.list_physical_devices("GPU")
if not GPUS:  # before TensorFlow initializes its devices
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

from kerastrain._keras import keras  # noqa: E402
from kerastrain.config import load_config  # noqa: E402
from kerastrain.data.prepare import prepare_data  # noqa: E402
from kerastrain.training import build_compiled_model, make_datasets  # noqa: E402


def strategies() -> dict[str, tf.distribute.Strategy]:
    """The sides compared: the first is the baseline."""
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    sides = {"1 CPU device": tf.distribute.OneDeviceStrategy(cpus[0])}
    if len(cpus) > 1:
        sides[f"Mirrored, {len(cpus)} CPU devices"] = tf.distribute.MirroredStrategy(cpus)
    if gpus:
        sides["1 GPU"] = tf.distribute.OneDeviceStrategy(gpus[0])
    if len(gpus) > 1:
        sides[f"Mirrored, {len(gpus)} GPUs"] = tf.distribute.MirroredStrategy(gpus)
    return sides


class _StepTimer(keras.callbacks.Callback):
    """Seconds of each training batch after the first `skip` (tracing)."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.seen, self.start, self.seconds = skip, 0, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def throughput(strategy: tf.distribute.Strategy, steps: int, batch: int) -> float:
    """Training steps per second of the digits CNN, per-replica batch ``batch``."""
    cfg = load_config(
        {
            "data": "digits",
            "model": "cnn",
            "seed": 0,
            "data_options": {"validation_split": 0.0, "test_split": 0.0},
            "train": {"batch_size": batch, "verbose": 0},
        }
    )
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    keras.backend.clear_session()
    model = build_compiled_model(
        cfg.train,
        prepared,
        strategy,
        model_spec=cfg.model,
        model_options=cfg.model_options,
        batch_size=cfg.batch_size,
        distribute=cfg.distribute,
    )
    train_ds, _ = make_datasets(
        cfg.train, prepared, strategy, batch_size=cfg.batch_size, seed=cfg.seed
    )
    timer = _StepTimer(skip=5)
    model.fit(train_ds.repeat(), steps_per_epoch=steps + 5, epochs=1, verbose=0, callbacks=[timer])
    return steps / timer.seconds


def launch_cost(epochs: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of one process vs a 2-worker launch of the same tiny config.

    Both sides get `TF_USE_LEGACY_KERAS=1`, which the launcher gives its
    processes, so that the difference is the launch's own.
    """
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    config = {
        "data": "iris",
        "model": "mlp",
        "seed": 0,
        "export": {"formats": ["keras"]},
        "train": {"epochs": epochs, "batch_size": 16, "early_stopping": None},
    }
    sides = {"one process": ["run"], "2-worker launch": ["launch", "--workers", "2"]}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for side in list(sides) if repeat % 2 == 0 else list(reversed(sides)):
                path = Path(tmp) / f"{side}-{repeat}.yaml"
                path.write_text(json.dumps({**config, "output_dir": str(path.with_suffix(""))}))
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "kerastrain.cli", *sides[side], str(path)],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                seconds[side].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--batch", type=int, default=64, help="per-replica batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--launch-epochs", type=int, default=2)
    parser.add_argument("--launch-repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    sides = strategies()
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):  # interleaved, so that load drifts hit every side
        for name in list(sides) if repeat % 2 == 0 else list(reversed(sides)):
            runs[name].append(throughput(sides[name], args.steps, args.batch))
    base_name = next(iter(sides))
    base = statistics.median(runs[base_name])
    figures: dict[str, dict] = {"throughput": {}, "launch": {}}
    print(
        f"Throughput: digits CNN, {args.batch} examples per replica per step, "
        f"median of {args.repeats}"
    )
    print(
        f"{'side':<28}{'steps/s':>10}{'examples/s':>12}{'steps/s ratio':>15}"
        f"{'examples/s ratio':>18}"
    )
    for name, strategy in sides.items():
        steps = statistics.median(runs[name])
        replicas = strategy.num_replicas_in_sync
        figures["throughput"][name] = {
            "steps_per_s": steps,
            "examples_per_s": steps * args.batch * replicas,
            "runs": runs[name],
        }
        print(
            f"{name:<28}{steps:>10.1f}{steps * args.batch * replicas:>12,.0f}"
            f"{steps / base:>15.2f}{steps * replicas / base:>18.2f}"
        )

    cost = launch_cost(args.launch_epochs, args.launch_repeats)
    figures["launch"] = cost
    one, two = (statistics.median(cost[side]) for side in ("one process", "2-worker launch"))
    print(
        f"\nStart-up: iris MLP, {args.launch_epochs} epochs, fresh processes, median of "
        f"{args.launch_repeats}"
    )
    print(f"one process (kerastrain run)        {one:6.1f} s")
    print(
        f"2-worker launch (kerastrain launch) {two:6.1f} s   ratio {two / one:.2f}, "
        f"+{two - one:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
