"""Batched prediction over rows of inputs: an array, or a table's dict of columns.

The one place that counts rows, slices a batch and predicts chunk by chunk,
for a tf_keras model and for any function of rows (an exported artifact's
predictor). Nothing here imports TensorFlow: a model is only called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "num_rows",
    "take",
    "batches",
    "predict_batched",
    "empty_outputs",
    "predict_model",
    "DIRECT_CALL_ROWS",
    "PREDICT_CHUNK_ROWS",
]

#: Up to this many rows, `predict_model(..., direct_call_rows=DIRECT_CALL_ROWS)`
#: calls the model directly rather than through `predict`, whose per-call
#: tracing costs more than the work on small data.
DIRECT_CALL_ROWS = 8192
#: Rows gathered and predicted at a time when scoring a large split, so that
#: the split is never copied whole.
PREDICT_CHUNK_ROWS = 65536


def num_rows(x: Any) -> int:
    """Rows of an array or of a dict of columns (a table)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of an array or of a dict of columns (views, not copies)."""
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]


def batches(x: Any, batch_size: int) -> Iterator[Any]:
    """Consecutive batches of ``batch_size`` rows (the last one shorter)."""
    for start in range(0, num_rows(x), batch_size):
        yield take(x, start, start + batch_size)


def predict_batched(
    predict: Callable[[Any], np.ndarray], x: Any, batch_size: int = 512
) -> np.ndarray:
    """``predict`` applied batch by batch, its outputs concatenated.

    Args:
        predict: A function from rows to outputs.
        x: Rows: an array (or any sliceable sequence, e.g. row indices) or a
            dict of columns.
        batch_size: Rows per call. Defaults to `512`.

    Returns:
        The outputs, one row per row of `x`; without rows, `predict`'s
        answer to no rows.

    Example:
        >>> predict_batched(lambda b: b * 2, np.arange(5), batch_size=2)
        array([0, 2, 4, 6, 8])
    """
    outputs = [np.asarray(predict(batch)) for batch in batches(x, batch_size)]
    return np.concatenate(outputs) if outputs else np.asarray(predict(take(x, 0, 0)))


def empty_outputs(model: Any) -> np.ndarray:
    """A model's outputs on no rows: ``(0, *output_shape[1:])`` float32."""
    return np.empty((0, *model.output_shape[1:]), np.float32)


def predict_model(
    model: Any, x: Any, batch_size: int = 512, *, direct_call_rows: int = 0
) -> np.ndarray:
    """A tf_keras model's outputs on ``x`` in inference mode.

    Args:
        model: The model.
        x: Rows: an array or a dict of columns.
        batch_size: Rows per batch. Defaults to `512`.
        direct_call_rows: Up to this many rows, the model is called on each
            batch directly (`model(batch, training=False)`) rather than
            through `model.predict`, whose per-call set-up dominates many
            small calls (permutation importance, ensembles); see
            `DIRECT_CALL_ROWS`. Defaults to `0` (always `predict`).

    Returns:
        The outputs, one row per row of `x`.
    """
    n = num_rows(x)
    if n == 0:
        return empty_outputs(model)
    if n > direct_call_rows:
        return model.predict(x, batch_size=batch_size, verbose=0)
    return predict_batched(lambda batch: model(batch, training=False), x, batch_size)
