"""The one batched-prediction helper, on arrays and on dicts of columns."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kerastrain.batching import (
    batches,
    empty_outputs,
    num_rows,
    predict_batched,
    predict_model,
    take,
)


def test_rows_and_batches_of_an_array_and_of_columns():
    x = np.arange(10).reshape(5, 2)
    table = {"a": np.arange(5), "b": np.arange(5) * 10}
    assert num_rows(x) == num_rows(table) == 5
    rows = take(table, 1, 3)
    assert {k: v.tolist() for k, v in rows.items()} == {"a": [1, 2], "b": [10, 20]}
    assert [len(b) for b in batches(x, 2)] == [2, 2, 1]
    assert [num_rows(b) for b in batches(table, 2)] == [2, 2, 1]


def test_predict_batched_calls_in_chunks_and_answers_no_rows():
    calls = []

    def double(batch):
        calls.append(num_rows(batch))
        return np.asarray(batch["a"] if isinstance(batch, dict) else batch) * 2

    np.testing.assert_array_equal(predict_batched(double, np.arange(5), 2), np.arange(5) * 2)
    assert calls == [2, 2, 1]
    out = predict_batched(double, {"a": np.arange(3)}, 512)
    np.testing.assert_array_equal(out, [0, 2, 4])
    assert predict_batched(double, np.zeros((0, 3)), 4).shape == (0, 3)


class _Model:
    """Records how it was asked: directly or through `predict`."""

    output_shape = (None, 3)

    def __init__(self):
        self.calls = []

    def __call__(self, x, training=False):
        self.calls.append(("call", len(x), training))
        return np.ones((len(x), 3), np.float32)

    def predict(self, x, batch_size, verbose):
        self.calls.append(("predict", len(x), batch_size))
        return np.ones((len(x), 3), np.float32)


def test_predict_model_calls_small_data_directly_when_asked():
    model = _Model()
    assert predict_model(model, np.zeros((5, 2)), 2).shape == (5, 3)
    assert model.calls == [("predict", 5, 2)]
    model.calls.clear()
    assert predict_model(model, np.zeros((5, 2)), 2, direct_call_rows=5).shape == (5, 3)
    assert model.calls == [("call", 2, False), ("call", 2, False), ("call", 1, False)]
    model.calls.clear()
    assert predict_model(model, np.zeros((0, 2))).shape == (0, 3)
    assert model.calls == []
    assert empty_outputs(model).dtype == np.float32


@pytest.mark.subprocess
def test_metrics_task_and_batching_import_no_tensorflow():
    code = (
        "import sys, kerastrain.metrics, kerastrain.task, kerastrain.batching; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
