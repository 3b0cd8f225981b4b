"""A text model's training speed: real tokens per second and model FLOPs
utilisation (MFU).

Real tokens are the tokens a row keeps after truncation to the model's
`max_length`, padding excluded: the training rate in examples per second
(the median of the epochs after the first, which traces the graphs;
validation excluded, `callbacks.ThroughputLogger`) times the mean tokens
per training row. The achieved FLOP/s are `flops.TRAINING_MULTIPLIER` times
the forward FLOPs per token (`flops.flops_per_token`, at `max_length`) times
the real tokens per second: the work the tokens needed, not the work spent
on padding. MFU is that over the device's matrix-product peak, measured once
per process and dtype with `flops.matmul_peak_flops` (square products of
`PEAK_SIZE`; on a shared machine the peak is measured under the same load as
the training, so the ratio is fair to the moment).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.training.execution import Decision
from kerastrain.training.flops import TRAINING_MULTIPLIER, flops_per_token, matmul_peak_flops

logger = logging.getLogger(__name__)

__all__ = [
    "PEAK_SIZE",
    "real_tokens_per_row",
    "device_peak_flops",
    "text_throughput",
]

#: Rows and columns of the square products that measure the peak: on a CPU
#: 1024 reaches the kernels' plateau in a fraction of a second; a GPU needs
#: larger ones.
PEAK_SIZE = {"cpu": 1024, "gpu": 4096}

#: The matrix-product dtype of each precision policy.
_PEAK_DTYPE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def model_max_length(model: keras.Model) -> int | None:
    """The longest `max_length` of the model's text layers (None: none)."""
    lengths = [getattr(layer, "max_length", None) for layer in model.layers]
    return max((n for n in lengths if isinstance(n, int)), default=None)


def real_tokens_per_row(model: keras.Model, prepared: Any) -> float:
    """Mean tokens a training row gives the model, over its text columns,
    after truncation to the model's `max_length` (padding not counted)."""
    length = model_max_length(model)
    tokens = 0.0
    for column in prepared.encoding.columns:
        if column.kind == "text":
            kept = np.minimum(column.lengths, length) if length else column.lengths
            tokens += float(kept.mean()) if len(kept) else 0.0
    return tokens


@functools.cache
def device_peak_flops(dtype: str = "float32") -> float:
    """The matrix-product peak of this process's default device in
    ``dtype``, in FLOP/s, measured once per process and dtype."""
    kind = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return matmul_peak_flops(dtype, size=PEAK_SIZE[kind], repeats=3, min_seconds=0.1)


def text_throughput(
    model: keras.Model,
    prepared: Any,
    history: Mapping[str, Sequence[float]],
    precision: str = "float32",
    *,
    peak: float | None = None,
) -> dict[str, Decision]:
    """Real tokens per second and MFU of a text model's training, logged.

    Args:
        model: The trained model.
        prepared: The prepared data (`encoding` holds each text column's
            training lengths).
        history: The fit's history (`examples_per_second` per epoch).
        precision: The policy the model trained under (its peak's dtype).
            Defaults to `"float32"`.
        peak: The device's peak FLOP/s. Defaults to `None`: measured
            (`device_peak_flops`).

    Returns:
        ``{"tokens_per_second": Decision, "mfu": Decision}`` for
        `result.performance`; empty when the data has no text or no rate was
        recorded (``"mfu"`` is left out when the FLOPs cannot be counted).
    """
    rates = [r for r in history.get("examples_per_second", []) if r and r > 0]
    if not getattr(prepared, "has_text", False) or not rates:
        return {}
    rows_per_second = float(np.median(rates[1:] or rates))
    tokens = real_tokens_per_row(model, prepared)
    tokens_per_second = rows_per_second * tokens
    epochs = f"the {len(rates) - 1} epochs after the first" if len(rates) > 1 else "one epoch"
    out = {
        "tokens_per_second": Decision(
            tokens_per_second,
            f"median training rate of {epochs}, {rows_per_second:,.1f} rows/s (validation "
            f"excluded), times {tokens:.1f} real (non-padding) tokens per training row",
        )
    }
    per_token = flops_per_token(model)
    if per_token:
        dtype = _PEAK_DTYPE.get(str(precision), "float32")
        peak = device_peak_flops(dtype) if peak is None else float(peak)
        achieved = TRAINING_MULTIPLIER * per_token * tokens_per_second
        out["mfu"] = Decision(
            achieved / peak,
            f"{achieved / 1e9:,.2f} GFLOP/s achieved ({TRAINING_MULTIPLIER} x {per_token:,.0f} "
            f"forward FLOPs per token x {tokens_per_second:,.0f} tokens/s) over a measured "
            f"{dtype} matrix-product peak of {peak / 1e9:,.1f} GFLOP/s",
        )
    logger.info(
        "Text training speed: %s real tokens/s%s.",
        f"{tokens_per_second:,.0f}",
        f", MFU {out['mfu'].value:.1%} ({out['mfu'].reason})" if "mfu" in out else "",
    )
    return out
