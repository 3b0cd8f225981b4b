"""The error classes and the one message generator every user-facing error uses."""

from __future__ import annotations

import numpy as np
import pytest

import kerastrain
from kerastrain import errors
from kerastrain._keras import keras
from kerastrain.callbacks import EarlyStopping
from kerastrain.config import DataConfig
from kerastrain.data.split import fold_indices
from kerastrain.data.validate import Task, validate
from kerastrain.errors import (
    BudgetNotMet,
    CompressionError,
    ConfigError,
    DataError,
    ExportError,
    KerastrainError,
    ResourceError,
    TrainingDivergedError,
    TuningError,
    WorkerFailed,
    config_error,
    message,
    one_of,
)
from kerastrain.training.schedules import OneCycle

BUILT_IN = {
    ConfigError: ValueError,
    DataError: ValueError,
    ExportError: RuntimeError,
    CompressionError: RuntimeError,
    BudgetNotMet: RuntimeError,
    TrainingDivergedError: RuntimeError,
    TuningError: RuntimeError,
    WorkerFailed: RuntimeError,
    ResourceError: MemoryError,
}


def test_every_class_is_listed_here():
    defined = {
        getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type) and getattr(errors, name) is not KerastrainError
    }
    assert defined == set(BUILT_IN)


@pytest.mark.parametrize("cls, built_in", BUILT_IN.items(), ids=lambda c: c.__name__)
def test_each_class_is_a_kerastrain_error_and_its_built_in(cls, built_in):
    assert issubclass(cls, KerastrainError) and issubclass(cls, built_in)
    assert getattr(kerastrain, cls.__name__) is cls  # kerastrain.TuningError and the others


def test_the_packages_that_raised_them_before_still_name_the_same_classes():
    import kerastrain.callbacks
    import kerastrain.compress
    import kerastrain.tune

    assert kerastrain.tune.TuningError is TuningError
    assert kerastrain.compress.BudgetNotMet is BudgetNotMet
    assert kerastrain.callbacks.TrainingDivergedError is TrainingDivergedError


def test_worker_failed_keeps_its_fields_and_log_tail():
    error = WorkerFailed("worker 1", -9, "was killed by signal SIGKILL", ["a", "b"])
    assert (error.task, error.returncode, error.log_tail) == ("worker 1", -9, ["a", "b"])
    assert str(error).startswith("worker 1 was killed by signal SIGKILL; the other processes")
    assert str(error).endswith("worker 1:\n    a\n    b")


def test_message_puts_what_received_allowed_and_suggestion_in_that_order():
    text = message(
        "Unknown TFLite mode",
        received={"mode": "in8"},
        allowed="Use " + one_of(["float32", "int8"]),
        candidates=["float32", "int8"],
    )
    assert text == (
        "Unknown TFLite mode. Received: mode='in8'. Use one of 'float32', 'int8'. "
        "Did you mean 'int8'?"
    )


def test_message_leaves_out_what_is_not_given_and_adds_no_second_period():
    assert message("Nothing here.") == "Nothing here."
    assert message("No rows", allowed="Pass some rows") == "No rows. Pass some rows."
    assert message("Bad", received={"a": 1, "b.c": [1, 2]}) == "Bad. Received: a=1, b.c=[1, 2]."


def test_message_suggests_only_for_a_near_miss_and_can_compare_another_value():
    assert "Did you mean" not in message("Bad", received={"x": "zzz"}, candidates=["adam"])
    assert "Did you mean" not in message("Bad", received={"x": 3}, candidates=["adam"])
    text = message("Unknown option 'widht'", candidates=["width", "depth"], near="widht")
    assert text.endswith("Did you mean 'width'?")


def test_message_keeps_a_list_that_ends_its_line():
    text = message("2 files cannot be read:\n  a.png\n  b.png\n", allowed="Remove them")
    assert text == "2 files cannot be read:\n  a.png\n  b.png\nRemove them."


def test_a_long_value_is_shortened():
    text = message("Bad", received={"x": list(range(100))})
    assert "Received: x=<list [0, 1, 2" in text and len(text) < 120


def test_config_error_keeps_the_option_wording_configs_are_matched_on():
    error = config_error("train.optimizer", "adamm", one_of(["adam", "sgd"]), ["adam", "sgd"])
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "The 'train.optimizer' option must be one of 'adam', 'sgd'. "
        "Received: train.optimizer='adamm'. Did you mean 'adam'?"
    )


# A few of the raise sites outside `config/`: each raises a class that is also
# the built-in, and names the value received and what is allowed.


def test_early_stopping_refuses_a_bad_mode_as_a_config_error():
    with pytest.raises(ConfigError) as caught:
        EarlyStopping(mode="mx")
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "Argument `mode` must be 'auto', 'min' or 'max'. Received: mode='mx'. Did you mean 'max'?"
    )
    with pytest.raises(ValueError, match=r"`patience` must be >= 0\. Received: patience=-1\."):
        EarlyStopping(patience=-1)


def test_a_schedule_argument_out_of_range():
    with pytest.raises(ValueError, match=r"`total_steps` must be > 0\. Received: total_steps=0\."):
        OneCycle(0.1, total_steps=0)


def test_labels_outside_the_classes_are_a_data_error_naming_the_option():
    with pytest.raises(DataError) as caught:
        validate(np.zeros((3, 2)), [0, 5, 1], DataConfig(task="multiclass", num_classes=2))
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "Rows 1 (1 row) have labels outside the class range 0..1 (first: 5). "
        "Received: data_options.num_classes=2. "
        "Set data_options.num_classes if there are more classes."
    )


def test_too_many_folds_name_the_folds_received():
    with pytest.raises(DataError, match=r"needs 2 to 4 folds for 4 rows\. Received: folds=9\."):
        fold_indices(np.array([0, 1, 0, 1]), Task("binary", 2), DataConfig(), 9, 0)


def test_an_unknown_tflite_mode_is_refused_before_anything_is_written():
    from kerastrain.export import convert_to_tflite

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ConfigError) as caught:
        convert_to_tflite(model, "in8")
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "Unknown TFLite mode. Received: mode='in8'. Use one of 'float32', 'float16', 'dynamic', "
        "'int8'. Did you mean 'int8'?"
    )


def test_an_unknown_artifact_is_an_export_error_naming_the_formats(tmp_path):
    from kerastrain.export import load_predictor

    with pytest.raises(ExportError) as caught:
        load_predictor(tmp_path / "model.pt")
    assert isinstance(caught.value, RuntimeError)
    assert f"Received: path={str(tmp_path / 'model.pt')!r}" in str(caught.value)
    assert ".tflite, .onnx, .keras or .h5" in str(caught.value)


def test_an_unknown_quantization_scheme_suggests_the_near_one():
    from kerastrain.compress.quantize import quantize

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ConfigError, match=r"Received: preserve='sparsty'.*'sparsity'\?"):
        quantize(model, preserve="sparsty")


def test_a_float_model_that_is_not_the_qat_source_is_a_compression_error():
    from kerastrain.compress.quantize import strip

    source = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="a")])
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="b")])
    with pytest.raises(CompressionError) as caught:
        strip(other, source)
    assert isinstance(caught.value, RuntimeError)
    assert "Pass as float_model the model that quantize() was given" in str(caught.value)


def test_a_long_path_is_shown_whole_so_it_can_be_copied_and_big_values_are_cut():
    from pathlib import Path

    from kerastrain.errors import describe

    path = Path("/tmp") / ("a-very-long-folder-name-" * 8) / "model.pt"
    assert describe(path) == repr(str(path))
    assert describe(str(path)) == repr(str(path))
    assert describe(list(range(100))).startswith("<list [0, 1, 2")
