"""Config sections: every bad value is refused when the config is built."""

from __future__ import annotations

import pytest
import yaml

from kerastrain import ConfigError
from kerastrain.config import (
    DataConfig,
    EarlyStoppingConfig,
    PipelineConfig,
    TrainConfig,
    load_config,
    save_config,
)


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"train": {"optimizr": "adam"}},
            r"Unknown option 'train.optimizr'.*Did you mean 'optimizer'",
        ),
        (
            {"train": {"optimizer": "adamm"}},
            r"'train.optimizer' option must be one of .*Received: train.optimizer='adamm'. Did you mean 'adam'",
        ),
        ({"train": {"epochs": 0}}, r"'train.epochs' option must be > 0. Received: train.epochs=0"),
        ({"train": {"epochs": 2.5}}, r"'train.epochs' option must be an integer"),
        ({"train": {"epochs": True}}, r"'train.epochs' option must be an integer"),
        ({"train": {"learning_rate": -1}}, r"'train.learning_rate' option must be > 0"),
        ({"train": {"learning_rate": "fast"}}, r"'train.learning_rate' option must be a number"),
        ({"train": {"weight_decay": -0.1}}, r"'train.weight_decay' option must be >= 0"),
        (
            {"train": {"label_smoothing": 1.0}},
            r"'train.label_smoothing' option must be >= 0.0 and < 1.0",
        ),
        (
            {"train": {"optimizer": "sgd", "optimizer_options": {"momentun": 0.9}}},
            r"'train.optimizer_options.momentun' for optimizer 'sgd'.*momentum.*Did you mean 'momentum'",
        ),
        ({"train": {"optimizer_options": {"learning_rate": 0.1}}}, r"set as 'train.learning_rate'"),
        (
            {"train": {"early_stopping": {"patiense": 3}}},
            r"'train.early_stopping.patiense'.*Did you mean 'patience'",
        ),
        (
            {"train": {"early_stopping": {"mode": "maximum"}}},
            r"'train.early_stopping.mode' option must be one of 'auto', 'min', 'max'",
        ),
        ({"train": {"verbose": 3}}, r"'train.verbose'"),
        (
            {"data_options": {"validation_split": 1.5}},
            r"'data_options.validation_split' option must be >= 0.0 and < 1.0",
        ),
        (
            {"data_options": {"validation_split": 0.6, "test_split": 0.5}},
            r"validation_split \+ test_split < 1",
        ),
        (
            {"data_options": {"task": "classify"}},
            r"'data_options.task' option must be one of 'auto', 'binary', 'multiclass', 'regression'",
        ),
        ({"data_options": {"num_classes": 1}}, r"'data_options.num_classes' option must be >= 2"),
        ({"data_options": {"batch_size": 0}}, r"'data_options.batch_size' option must be > 0"),
        (
            {"data_options": {"batch_size": 16}, "train": {"batch_size": 32}},
            r"Two batch sizes were given",
        ),
        ({"export": {"formats": ["tflit"]}}, r"'export.formats\[0\]'.*Did you mean 'tflite'"),
        ({"export": {"formats": "tflite"}}, r"'export.formats' option must be a list"),
        ({"export": {"formats": ["keras", "keras"]}}, r"without repeats"),
        ({"export": {"atol": 0}}, r"'export.atol' option must be > 0"),
        ({"strategy": "mirored"}, r"'strategy' option must be one of .*Did you mean 'mirrored'"),
        ({"strategy": 3}, r"'strategy' option must be a strategy name"),
        ({"seed": "abc"}, r"'seed' option must be an integer or None"),
        ({"overwrite": "yes"}, r"'overwrite' option must be true or false"),
        ({"model": 3}, r"'model' option must be a factory name"),
        ({"trian": {}}, r"Unknown option 'trian'.*Did you mean 'train'"),
        ({"train": ["epochs", 3]}, r"'train' option must be a mapping of TrainConfig options"),
    ],
)
def test_bad_values_are_refused_with_the_key_the_value_and_what_is_allowed(options, match):
    with pytest.raises(ConfigError, match=match):
        load_config(options)


def test_config_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        TrainConfig(epochs=-1)


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="lion")


def test_defaults_resolve_one_batch_size():
    config = load_config({})
    assert config.train.batch_size == config.data_options.batch_size == 32
    assert load_config({"data_options": {"batch_size": 8}}).train.batch_size == 8


def test_early_stopping_shorthands_normalize():
    assert TrainConfig(early_stopping=7).early_stopping == EarlyStoppingConfig(patience=7)
    assert TrainConfig(early_stopping=True).early_stopping == EarlyStoppingConfig()
    assert TrainConfig(early_stopping=False).early_stopping is None
    assert TrainConfig(early_stopping=None).early_stopping is None


def test_keyword_sections_merge_into_the_config_key_by_key():
    config = load_config({"train": {"epochs": 3, "optimizer": "sgd"}}, train={"epochs": 5})
    assert (config.train.epochs, config.train.optimizer) == (5, "sgd")


def test_yaml_round_trip_reproduces_the_config(tmp_path):
    config = load_config(
        {
            "data": "wine",
            "model": "mlp",
            "model_options": {"width": 16},
            "train": {
                "epochs": 4,
                "optimizer": "sgd",
                "optimizer_options": {"momentum": 0.9, "nesterov": True},
            },
            "seed": 3,
        }
    )
    path = save_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["train"]["optimizer_options"] == {
        "momentum": 0.9,
        "nesterov": True,
    }
    assert load_config(path) == config


def test_unreadable_and_invalid_yaml_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listed)


def test_config_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, kerastrain.config; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pipeline_config_accepts_a_strategy_instance():
    class FakeStrategyShape:  # duck-typed: config never imports TensorFlow
        num_replicas_in_sync = 1

        def scope(self):
            return None

    assert isinstance(PipelineConfig(strategy=FakeStrategyShape()).strategy, FakeStrategyShape)
    assert DataConfig().task == "auto"


def test_output_dir_may_be_a_path(tmp_path):
    assert load_config(output_dir=tmp_path / "run").output_dir == str(tmp_path / "run")
    assert load_config({"output_dir": tmp_path}).output_dir == str(tmp_path)
