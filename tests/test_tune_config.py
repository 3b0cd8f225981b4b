"""The `tune` section: space syntax, conditions, objectives; checked without TensorFlow."""

from __future__ import annotations

import functools

import pytest

from kerastrain import ConfigError
from kerastrain.config import TrainConfig, TuneConfig, load_config
from kerastrain.config.tune import (
    TRAINING_OPTIONS,
    BoolEntry,
    ChoiceEntry,
    FixedEntry,
    FloatEntry,
    IntEntry,
    infer_direction,
    route,
)

LR = {"type": "float", "min": 1e-4, "max": 1e-1, "log": True}


def test_space_forms_are_normalized():
    tune = TuneConfig(
        space={
            "learning_rate": LR,
            "width": {"type": "int", "min": 8, "max": 64, "step": 8},
            "optimizer": ["adam", "sgd"],
            "momentum": {"type": "float", "min": 0.0, "max": 0.9, "when": {"optimizer": "sgd"}},
            "batch_norm": {"type": "bool"},
            "activation": "relu",
        }
    )
    space = tune.space
    assert space["learning_rate"] == FloatEntry(min=1e-4, max=1e-1, log=True, sampling="log")
    assert space["width"] == IntEntry(min=8, max=64, step=8, sampling="linear")
    assert space["width"].to_dict() == {
        "type": "int",
        "min": 8,
        "max": 64,
        "step": 8,
        "log": False,
        "sampling": "linear",
        "default": None,
        "when": None,
    }
    assert space["optimizer"] == ChoiceEntry(values=["adam", "sgd"])
    assert space["momentum"].when == {"optimizer": ["sgd"]}
    assert space["batch_norm"] == BoolEntry(default=False)
    assert space["activation"] == FixedEntry(value="relu")
    # Normalizing twice changes nothing (configs are rebuilt from their values).
    assert TuneConfig(space=space).space == space
    assert TuneConfig(space={k: v.to_dict() for k, v in space.items()}).space == space


def test_space_entries_are_sections_checked_by_the_same_machinery():
    with pytest.raises(ConfigError, match=r"'tune.space.lr.step' option must be > 0.0"):
        TuneConfig(space={"lr": {"type": "float", "min": 0.1, "max": 1.0, "step": 0}})
    with pytest.raises(ConfigError, match=r"'tune.space.lr.sampling' option must be one of"):
        TuneConfig(space={"lr": {"type": "float", "min": 0.1, "max": 1.0, "sampling": "lg"}})
    with pytest.raises(ConfigError, match=r"Unknown option 'tune.space.on.valeus' for a choice"):
        TuneConfig(space={"on": {"type": "choice", "valeus": [1, 2]}})
    with pytest.raises(ConfigError, match=r"'tune.space.on' needs 'value'"):
        TuneConfig(space={"on": {"type": "fixed"}})
    # A typed entry given directly is used as is.
    entry = IntEntry(min=1, max=3, default=2)
    assert TuneConfig(space={"depth": entry}).space["depth"] is entry


@pytest.mark.parametrize(
    "space, match",
    [
        ({"lr": {"type": "flaot", "min": 0, "max": 1}}, "Did you mean 'float'"),
        ({"lr": {"type": "float", "min": 1, "max": 0.5}}, r"tune.space.lr.max.*greater than min=1"),
        ({"lr": {"type": "float", "min": 0.0, "max": 1.0, "log": True}}, r"> 0 for log sampling"),
        ({"lr": {"type": "float", "min": 0.1, "max": 1.0, "stepp": 0.1}}, "Did you mean 'step'"),
        ({"width": {"type": "int", "min": 1.5, "max": 4}}, "must be an integer"),
        ({"width": {"type": "int", "min": 1}}, "needs 'max'"),
        ({"act": {"type": "choice", "values": []}}, "non-empty list"),
        ({"act": {"type": "choice", "values": ["relu", 1]}}, "values of one type"),
        ({"act": {"type": "choice", "values": ["relu"], "default": "tanh"}}, "one of the values"),
        (
            {"width": [8, 16], "depth": {"type": "int", "min": 1, "max": 3, "when": {"widht": 8}}},
            "Did you mean 'width'",
        ),
        (
            {"width": [8, 16], "depth": {"type": "int", "min": 1, "max": 3, "when": {"width": 32}}},
            r"one of the values of 'width': 8, 16",
        ),
        (
            {"lr": LR, "depth": {"type": "int", "min": 1, "max": 3, "when": {"lr": 0.01}}},
            "'lr' is a float",
        ),
        (
            {
                "a": {"type": "bool", "when": {"b": True}},
                "b": {"type": "bool", "when": {"a": True}},
            },
            "form a cycle",
        ),
        ({"a": [1, 2], "b": [1, 2], "c": {"type": "bool", "when": {"a": 1, "b": 1}}}, "one parent"),
        (
            {"momentum": [0.0, 0.9], "optimizer": ["adam", "sgd"]},
            r"not accepted by 'adam'.*when: \{optimizer: \['sgd'\]\}",
        ),
    ],
)
def test_bad_space_is_refused_with_the_key(space, match):
    with pytest.raises(ConfigError, match=match):
        TuneConfig(space=space)


def test_algorithm_specific_checks():
    with pytest.raises(ConfigError, match="float range without 'step'"):
        TuneConfig(algorithm="grid", space={"learning_rate": LR})
    assert TuneConfig(
        algorithm="grid", space={"dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.25}}
    )
    with pytest.raises(ConfigError, match="Hyperband decides each trial's epochs"):
        TuneConfig(algorithm="hyperband", space={"epochs": [1, 2]})
    with pytest.raises(ConfigError, match="cv_folds cannot be combined"):
        TuneConfig(algorithm="hyperband", cv_folds=3, space={"learning_rate": LR})
    with pytest.raises(ConfigError, match="'tune.algorithm' option must be one of"):
        TuneConfig(algorithm="tpe", space={"learning_rate": LR})
    with pytest.raises(ConfigError, match="tune needs a search space"):
        TuneConfig()
    with pytest.raises(ConfigError, match="either 'tune.space' or 'tune.build'"):
        TuneConfig(space={"learning_rate": LR}, build=lambda hp: {})
    with pytest.raises(ConfigError, match="import path 'module:function'"):
        TuneConfig(build="not a path")


def test_objective_direction_is_inferred_or_checked():
    assert TuneConfig(space={"x": [1, 2]}).objective == {"name": "val_loss", "direction": "min"}
    assert TuneConfig(space={"x": [1, 2]}, objective="val_accuracy").direction == "max"
    assert TuneConfig(space={"x": [1, 2]}, objective={"name": "val_f1"}).direction == "max"
    custom = TuneConfig(space={"x": [1, 2]}, objective={"name": "val_mae", "direction": "min"})
    assert custom.objective == {"name": "val_mae", "direction": "min"}
    with pytest.raises(ConfigError, match="'min' or 'max'"):
        TuneConfig(space={"x": [1, 2]}, objective={"name": "val_f1", "direction": "up"})
    with pytest.raises(ConfigError, match="Did you mean 'direction'"):
        TuneConfig(space={"x": [1, 2]}, objective={"name": "val_f1", "directon": "max"})
    assert infer_direction("val_roc_auc") == "max" and infer_direction("val_rmse") == "min"


def test_names_route_to_train_optimizer_or_model():
    assert route("learning_rate") == ("train", "learning_rate")
    assert route("batch_size") == ("train", "batch_size")
    assert route("warmup.epochs") == ("train", "warmup.epochs")
    assert route("beta_1") == ("optimizer_options", "beta_1")
    assert route("width") == ("model_options", "width")
    assert route("model_options.momentum") == ("model_options", "momentum")


def test_space_is_checked_against_the_training_options():
    with pytest.raises(ConfigError, match=r"train.optimizer='adam' accepts only"):
        load_config({"tune": {"space": {"momentum": [0.0, 0.9]}}})
    assert load_config({"train": {"optimizer": "sgd"}, "tune": {"space": {"momentum": [0.0, 0.9]}}})
    with pytest.raises(ConfigError, match="'tune.space.batch_size' can take the value 0"):
        load_config({"tune": {"space": {"batch_size": [0, 32]}}})
    with pytest.raises(ConfigError, match=r"'tune.space.warmup.epochs' can take the value 20"):
        load_config({"tune": {"space": {"warmup.epochs": [0, 20]}}})
    with pytest.raises(ConfigError, match="train.optimizer_options sets 'momentum'"):
        load_config(
            {
                "train": {"optimizer": "sgd", "optimizer_options": {"momentum": 0.9}},
                "tune": {"space": {"optimizer": ["sgd", "adam"]}},
            }
        )


def test_tune_section_merges_and_round_trips_through_yaml(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "tune:\n"
        "  algorithm: hyperband\n"
        "  max_epochs: 9\n"
        "  objective: {name: val_accuracy}\n"
        "  space:\n"
        "    learning_rate: {type: float, min: 1.0e-4, max: 1.0e-1, log: true}\n"
        "    width: [16, 32]\n"
    )
    config = load_config(path, tune={"max_trials": 4})
    assert config.tune.algorithm == "hyperband" and config.tune.max_trials == 4
    assert config.tune.space["width"].values == [16, 32]
    again = load_config(config.to_dict())
    assert again.tune == config.tune


def test_every_training_option_of_the_space_is_an_option_of_train():
    train = TrainConfig()
    for name in TRAINING_OPTIONS:
        value = functools.reduce(getattr, name.split("."), train)
        assert train.replace(**{name: value}) == train, name


def test_a_tuned_old_training_name_maps_to_the_nested_option_with_a_warning():
    with pytest.warns(
        DeprecationWarning,
        match=r"tune.space.warmup_epochs is deprecated: use "
        r"tune.space.warmup.epochs",
    ):
        config = load_config({"tune": {"space": {"warmup_epochs": [0, 2]}}})
    assert route("warmup_epochs") == ("train", "warmup.epochs")
    assert config.tune.space["warmup_epochs"] == ChoiceEntry(values=[0, 2])
    with pytest.raises(ConfigError, match=r"both tune 'train.warmup.epochs'"):
        TuneConfig(space={"warmup_epochs": [0, 2], "warmup.epochs": [1, 3]})
