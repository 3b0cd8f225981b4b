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


#: Every flat training key of the last release, a value for it, and where it lives now.
RENAMED = [
    ("warmup_epochs", 2.0, "warmup.epochs"),
    ("warmup_steps", 7, "warmup.steps"),
    ("warmup_method", "exponential", "warmup.method"),
    ("warmup_learning_rate", 1e-5, "warmup.start_learning_rate"),
    ("resume", False, "backup.resume"),
    ("backup_frequency", 4, "backup.frequency"),
    ("backup_interval", 0.0, "backup.interval"),
    ("mixed_precision", "float32", "execution.mixed_precision"),
    ("jit_compile", False, "execution.jit_compile"),
    ("steps_per_execution", 8, "execution.steps_per_execution"),
    ("ema_momentum", 0.9, "ema.momentum"),
]


def _option(section, dotted):
    for name in dotted.split("."):
        section = getattr(section, name)
    return section


@pytest.mark.parametrize("old, value, new", RENAMED)
def test_old_flat_training_keys_move_to_their_section_with_a_warning(old, value, new):
    warning = rf"train\.{old} is deprecated: use train\.{new.replace('.', '[.]')}"
    extra = {"ema": True} if old == "ema_momentum" else {}
    with pytest.warns(DeprecationWarning, match=warning) as keyword_warnings:
        by_keyword = TrainConfig(**{old: value}, **extra)
    with pytest.warns(DeprecationWarning, match=warning) as yaml_warnings:
        from_yaml = load_config(yaml.safe_load(yaml.safe_dump({"train": {old: value, **extra}})))
    # Each warning points at the caller's line, so that Python shows it to a script's author.
    assert keyword_warnings[0].filename == yaml_warnings[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=warning):
        replaced = TrainConfig(**extra).replace(**{old: value})
    new_key = TrainConfig(**extra).replace(**{new: value})
    assert _option(by_keyword, new) == _option(from_yaml.train, new) == value
    assert replaced == by_keyword == new_key
    assert old not in from_yaml.train.to_dict()


def test_old_and_new_key_together_are_refused():
    with pytest.raises(ConfigError, match=r"Both train.warmup_epochs and train.warmup.epochs"):
        load_config({"train": {"warmup_epochs": 1, "warmup": {"epochs": 2}}})
    # Old keys of one section merge with the new keys given beside them.
    with pytest.warns(DeprecationWarning):
        train = TrainConfig(warmup_epochs=1, warmup={"method": "exponential"})
    assert (train.warmup.epochs, train.warmup.method) == (1.0, "exponential")


def test_ema_momentum_without_ema_leaves_ema_off_as_it_did():
    with pytest.warns(DeprecationWarning, match="use train.ema.momentum"):
        assert TrainConfig(ema_momentum=0.5).ema is None


def test_nested_training_sections():
    train = TrainConfig(
        warmup={"epochs": 1.5, "method": "exponential", "start_learning_rate": 1e-5},
        backup={"resume": False, "frequency": 10, "interval": 0},
        execution={"mixed_precision": "float32", "jit_compile": False, "steps_per_execution": 4},
        ema={"momentum": 0.9},
    )
    assert train.warmup.enabled and train.warmup.epochs == 1.5
    assert (train.backup.resume, train.backup.frequency, train.backup.interval) == (False, 10, 0.0)
    assert train.execution.steps_per_execution == 4 and train.ema.momentum == 0.9
    assert TrainConfig(ema=True).ema.momentum == 0.99 and TrainConfig().ema is None
    assert not TrainConfig().warmup.enabled
    with pytest.raises(ConfigError, match=r"Unknown option 'train.warmup.epoch'.*'epochs'"):
        TrainConfig(warmup={"epoch": 1})
    with pytest.raises(ConfigError, match=r"'train.execution.mixed_precision' option must be"):
        TrainConfig(execution={"mixed_precision": "float16"})
    with pytest.raises(ConfigError, match=r"Both 'train.warmup.epochs' and 'train.warmup.steps'"):
        TrainConfig(warmup={"epochs": 1, "steps": 10})
    with pytest.raises(ConfigError, match=r"'train.backup.interval' option must be >= 0"):
        TrainConfig(backup={"interval": -1})


def test_nested_sections_merge_key_by_key_under_keyword_overrides():
    config = load_config(
        {"train": {"warmup": {"epochs": 2}, "execution": {"jit_compile": False}}},
        train={"warmup": {"method": "exponential"}},
    )
    assert (config.train.warmup.epochs, config.train.warmup.method) == (2.0, "exponential")
    assert config.train.execution.jit_compile is False


def test_schedule_options_are_the_section_of_the_chosen_schedule():
    from kerastrain.config.train import CosineOptions, StepOptions

    train = TrainConfig(schedule="step", schedule_options={"gamma": 0.5})
    assert train.schedule_options == StepOptions(gamma=0.5)
    assert TrainConfig(schedule="cosine").schedule_options == CosineOptions()
    # Another schedule keeps the options that were set, checked against it.
    assert TrainConfig(schedule="step").replace(schedule="cosine").schedule_options == (
        CosineOptions()
    )
    with pytest.raises(ConfigError, match=r"'train.schedule_options.gamma' for schedule 'cosine'"):
        train.replace(schedule="cosine")
    with pytest.raises(ConfigError, match=r"'train.schedule_options' option must be a mapping"):
        TrainConfig(schedule="step", schedule_options=[0.5])


def test_names_are_listed_once_and_the_builders_cover_them():
    from kerastrain.config.distribute import STRATEGIES
    from kerastrain.config.train import OPTIMIZER_OPTIONS, OPTIMIZERS, SCHEDULE_OPTIONS, SCHEDULES
    from kerastrain.distribute import STRATEGY_BUILDERS
    from kerastrain.training.optimizers import OPTIMIZER_CLASSES

    assert OPTIMIZERS == tuple(OPTIMIZER_OPTIONS) and SCHEDULES == tuple(SCHEDULE_OPTIONS)
    assert tuple(OPTIMIZER_CLASSES) == OPTIMIZERS
    assert tuple(STRATEGY_BUILDERS) == STRATEGIES
    with pytest.raises(ConfigError, match=r"one of 'sgd', 'adam', 'adamw'"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ConfigError, match=r"one of 'auto', 'constant', 'step'.*'plateau'"):
        TrainConfig(schedule="linear")


def test_validation_never_changes_the_sections_it_is_given():
    train = TrainConfig(epochs=2)
    data = DataConfig()
    config = PipelineConfig(train=train, data_options=data)
    assert config.train.batch_size == config.data_options.batch_size == 32
    assert train.batch_size is None and data.batch_size is None
    assert load_config(train=train).train.batch_size == 32 and train.batch_size is None
    assert load_config(config, train={"epochs": 3}).train.epochs == 3
    assert config.train.epochs == 2 and train.epochs == 2


def test_fit_pipeline_leaves_the_callers_train_config_as_it_was(tmp_path):
    import numpy as np

    from kerastrain import DataError, fit_pipeline

    train = TrainConfig(epochs=1, verbose=0)
    before = train.to_dict()
    with pytest.raises(DataError):  # stops after the config is resolved and saved
        fit_pipeline(
            (np.zeros((4, 3), np.float32), np.zeros(5)),
            "mlp",
            train=train,
            strategy="cpu",
            output_dir=tmp_path / "run",
        )
    assert train.to_dict() == before and train.batch_size is None
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert saved["batch_size"] == 32
    assert saved["schedule"] == "constant" and saved["warmup"]["epochs"] == 0.0
    assert saved["execution"]["mixed_precision"] == "auto"
    assert not {old for old, _, _ in RENAMED} & set(saved)
