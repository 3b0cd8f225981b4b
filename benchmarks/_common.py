"""Shared by the benchmark scripts: interleaved A/B runs, medians, peak memory."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_rss_mib() -> float:
    """The process's peak resident set so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_timer(times: list[float]) -> Any:
    """A tf_keras callback appending each epoch's seconds (validation
    included, as kerastrain's `epoch_time` log) to ``times``."""
    from kerastrain._keras import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            times.append(time.perf_counter() - self.start)

    return EpochTimer()


def steady_rate(examples_per_epoch: int, epoch_times: list[float]) -> float:
    """Examples per second of the epochs after the first (which traces the
    graphs): the rate a long run converges to."""
    return examples_per_epoch / statistics.median(epoch_times[1:] or epoch_times)


def interleave(sides: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Runs each side once per repeat, alternating A, B, A, B, ..."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for name in order:
            results[name].append(sides[name](repeat))
    return results


def table(results: dict[str, list[float]], unit: str = "examples/s") -> dict[str, float]:
    """Prints the median and every run of each side; returns the medians."""
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"{'side':<28}{unit + ' (median)':>24}   runs")
    for name, values in results.items():
        print(f"{name:<28}{medians[name]:>24,.0f}   {', '.join(f'{v:,.0f}' for v in values)}")
    return medians
