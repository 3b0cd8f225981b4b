"""Hostile and careless options: every number an option holds must be finite,
and a bad value is refused naming the option, before any data is read."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

import numpy as np
import pytest

import kerastrain.config  # noqa: F401 - imports every section
from kerastrain import ConfigError, DataError
from kerastrain.cli import main
from kerastrain.config import DataConfig, Section, load_config
from kerastrain.data.prepare import prepare_data

NON_FINITE = [math.inf, -math.inf, math.nan]


def _sections() -> list[type[Section]]:
    found, stack = [], [Section]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("kerastrain.config") and dataclasses.is_dataclass(sub):
                found.append(sub)
    return found


def _mentions_float(tp: Any) -> bool:
    if tp is float:
        return True
    return any(_mentions_float(arg) for arg in typing.get_args(tp))


def _sample(tp: Any) -> Any:
    """A valid value of a required field's annotation."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return _sample(typing.get_args(tp)[0])
    if typing.get_origin(tp) is list:
        return [_sample(typing.get_args(tp)[0]), 2]
    return {float: 1.0, int: 1, bool: True, str: "a"}[tp]


def _float_fields() -> list[tuple[type[Section], str, Any]]:
    fields = []
    for section in _sections():
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            if f.init and "chosen_by" not in f.metadata and _mentions_float(hints[f.name]):
                fields.append((section, f.name, hints[f.name]))
    return fields


FLOAT_FIELDS = _float_fields()


def _build(section: type[Section], name: str, value: Any) -> Section:
    hints = typing.get_type_hints(section)
    options = {
        f.name: _sample(hints[f.name])
        for f in dataclasses.fields(section)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    options[name] = value
    return section.from_dict(options)


def test_the_walk_finds_every_sections_float_options():
    names = {f"{s._path}.{n}" for s, n, _ in FLOAT_FIELDS}
    assert len(FLOAT_FIELDS) >= 50
    for expected in (
        "train.learning_rate",
        "train.weight_decay",
        "data_options.validation_split",
        "export.atol",
        "tune.space.max",
        "train.schedule_options.boundaries",
        "compress.distill.temperature",
    ):
        assert expected in names


@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan"])
def test_every_float_option_of_every_section_refuses_non_finite_values(value):
    accepted = []
    for section, name, tp in FLOAT_FIELDS:
        holds_list = typing.get_origin(tp) is list or any(
            typing.get_origin(arg) is list for arg in typing.get_args(tp)
        )
        holds_dict = not holds_list and (
            typing.get_origin(tp) is dict
            or any(typing.get_origin(arg) is dict for arg in typing.get_args(tp))
        )
        given = [value] if holds_list else {"a": value} if holds_dict else value
        try:
            _build(section, name, given)
        except ConfigError as exc:
            inside = "[0]" if holds_list else ".a" if holds_dict else ""
            where = f"{section._path}.{name}{inside}"
            assert f"The {where!r} option must be a finite number" in str(exc), str(exc)
        else:
            accepted.append(f"{section.__name__}.{name}")
    assert not accepted


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"train": {"learning_rate": math.inf}}, "train.learning_rate"),
        ({"train": {"learning_rate": 10**400}}, "train.learning_rate"),
        ({"train": {"optimizer_options": {"beta_1": math.nan}}}, "train.optimizer_options.beta_1"),
        ({"model_options": {"dropout": math.inf}}, "model_options.dropout"),
        ({"model_options": {"units": [64, math.nan]}}, "model_options.units[1]"),
        (
            {"train": {"schedule": "multistep", "schedule_options": {"boundaries": [1, math.inf]}}},
            "train.schedule_options.boundaries[1]",
        ),
        ({"train": {"warmup": {"epochs": math.inf}}}, "train.warmup.epochs"),
        ({"data_options": {"in_memory_mb": math.inf}}, "data_options.in_memory_mb"),
        (
            {"tune": {"space": {"lr": {"type": "float", "min": 1e-4, "max": math.inf}}}},
            "tune.space.lr.max",
        ),
        (
            {"tune": {"space": {"lr": {"type": "choice", "values": [0.1, math.nan]}}}},
            "tune.space.lr.values[1]",
        ),
    ],
    ids=[
        "lr-inf",
        "lr-huge-int",
        "optimizer-options",
        "model-options",
        "model-options-list",
        "schedule-list",
        "nested-section",
        "data-options",
        "tune-range",
        "tune-choice",
    ],
)
def test_non_finite_numbers_are_refused_naming_the_option(options, path):
    with pytest.raises(ConfigError, match="must be a finite number") as info:
        load_config(options)
    assert f"{path!r}" in str(info.value)


@pytest.mark.parametrize("text", ["1.0e+400", ".inf", "-.inf", ".nan"])
def test_yaml_non_finite_numbers_are_refused(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(f"train:\n  learning_rate: {text}\n")
    with pytest.raises(ConfigError, match="'train.learning_rate' option must be a finite number"):
        load_config(path)


def test_the_cli_refuses_an_infinite_learning_rate_in_one_paragraph(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\ntrain:\n  learning_rate: .inf\n")
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "train.learning_rate" in err and "finite number" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_file_is_refused_not_run_on_the_defaults(tmp_path, capsys, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="holds no options"):
        load_config(path)
    assert main(["run", str(path)]) == 2
    assert "holds no options" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"learning_rate": "1e-3"}, "write 1.0e-3"),
        ({"weight_decay": "1e-4"}, "write 1.0e-4"),
        ({"weight_decay": "0.01"}, "without quotes"),
    ],
)
def test_a_number_written_as_text_says_how_to_write_it(options, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(train=options)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"max_dataset_rows": 0}, "'data_options.max_dataset_rows' option must be > 0"),
        ({"max_dataset_rows": 1.5}, "'data_options.max_dataset_rows' option must be an integer"),
        ({"validation_split": 0.6, "test_split": 0.5}, "validation_split \\+ test_split < 1"),
        ({"num_classes": 1}, "'data_options.num_classes' option must be >= 2"),
        ({"image_size": [0, 8]}, "'data_options.image_size' option"),
        ({"task": "clasification"}, "Did you mean 'multiclass'|must be one of"),
        ({"impute": "zero"}, "'data_options.impute' option must be one of"),
        ({"targt": "label"}, "Did you mean 'target'"),
        ({"batch_size": True}, "'data_options.batch_size' option"),
    ],
    ids=[
        "max-rows-0",
        "max-rows-float",
        "splits-sum",
        "one-class",
        "image-size",
        "task-typo",
        "impute",
        "unknown-key",
        "bool-as-int",
    ],
)
def test_careless_data_options_are_refused(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        DataConfig.from_dict(options)


def test_non_finite_values_in_the_data_are_a_data_error_not_an_option_error():
    # `data` is the data itself, not an option: its values are checked (rows
    # named) by the data stage, and never walked by the config.
    data = ([[1.0, math.nan]] * 20 + [[0.0, 1.0]] * 20, [0, 1] * 20)
    config = load_config(data=data)
    with pytest.raises(DataError, match=r"Rows 0, 1, 2, 3, 4, \.\.\. \(20 rows\) have NaN"):
        prepare_data(config.data, config.data_options, seed=0)


def test_numpy_floats_are_checked_like_floats():
    with pytest.raises(ConfigError, match="'train.learning_rate' option must be a finite number"):
        load_config(train={"learning_rate": np.float64("inf")})
    with pytest.raises(ConfigError, match="'train.clipnorm' option must be a finite number"):
        load_config(train={"clipnorm": np.float64("nan")})
