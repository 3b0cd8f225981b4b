"""What the report says of a model that reads text: its size, its FLOPs per
token and the tokens per second it trained at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras
from kerastrain.report.section import Section
from kerastrain.training.flops import flops_per_token

__all__ = ["text_model_sections"]


def text_model_sections(
    model: keras.Model,
    prepared: Any,
    history: Mapping[str, Sequence[float]],
    performance: Mapping[str, Any] | None = None,
) -> list[Section]:
    """The report's "Text model" section (none when the data has no text).

    Parameters, forward FLOPs per token at the model's `max_length`, each
    text column's tokens per training row (after truncation), and the
    training rate in real (non-padding) tokens per second: the examples per
    second of the epochs after the first (which traces the graphs) times the
    mean tokens per row.

    Args:
        model: The trained model.
        prepared: The prepared data (its `encoding` has each text column's
            training lengths).
        history: The fit's history (`examples_per_second` per epoch).
        performance: The run's decisions; its ``"mfu"``
            (`kerastrain.training.throughput.text_throughput`) is stated.
            Defaults to `None`.

    Returns:
        `kerastrain.report.Section`s for `write_report(sections=...)`.
    """
    if not getattr(prepared, "has_text", False):
        return []
    per_token = flops_per_token(model)
    lengths = [getattr(layer, "max_length", None) for layer in model.layers]
    length = max((n for n in lengths if isinstance(n, int)), default=None)
    tokens = 0.0
    rows = []
    for column in prepared.encoding.columns:
        if column.kind != "text":
            continue
        kept = np.minimum(column.lengths, length) if length else column.lengths
        tokens += float(kept.mean())
        rows.append(
            {
                "column": column.name,
                "vocabulary": len(column.vocabulary) + 2,
                "tokens per row (median)": float(np.median(column.lengths)),
                "longest row": int(column.lengths.max()),
                "rows truncated": int((column.lengths > length).sum()) if length else 0,
            }
        )
    rates = list(history.get("examples_per_second", []))
    rate = float(np.median(rates[1:] or rates)) * tokens if rates else None
    text = [f"{model.count_params():,} parameters."]
    if per_token is not None:
        text.append(f"{per_token:,.0f} forward FLOPs per token at {length} tokens per row.")
    if rate is not None:
        text.append(f"Training read {rate:,.0f} real (non-padding) tokens per second.")
    mfu = (performance or {}).get("mfu")
    if mfu is not None:
        text.append(f"Model FLOPs utilisation {mfu.value:.1%}: {mfu.reason}.")
    return [Section("Text model", text=" ".join(text), rows=rows)]
