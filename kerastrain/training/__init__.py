"""The training stage: build, compile and fit a model on prepared data.

`run` (one run: feed, build, compile, fit; the pipeline and tuning share it),
`fit` (the one ``model.fit``, its callbacks, `compile_model`), `fine_tune`
(a transfer model's phase 2), `optimizers`, `schedules`, `losses`,
`precision` and `execution` (the ``"auto"`` speed choices), `flops`.
"""

from kerastrain.training.execution import Decision, describe_decisions
from kerastrain.training.fit import TrainResult, compile_model, default_callbacks, train_model
from kerastrain.training.precision import as_float32
from kerastrain.training.run import (
    build_compiled_model,
    find_learning_rate,
    global_batch_size,
    make_datasets,
    predict_split,
    run_training,
)
from kerastrain.training.text_facts import text_model_sections
from kerastrain.training.throughput import text_throughput

__all__ = [
    "Decision",
    "TrainResult",
    "as_float32",
    "build_compiled_model",
    "compile_model",
    "default_callbacks",
    "describe_decisions",
    "find_learning_rate",
    "global_batch_size",
    "make_datasets",
    "predict_split",
    "run_training",
    "text_model_sections",
    "text_throughput",
    "train_model",
]
