"""Optimizers and options built from the training config."""

from __future__ import annotations

import pytest

from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.callbacks import Scaled
from kerastrain.config import TrainConfig
from kerastrain.training.fit import compile_options
from kerastrain.training.optimizers import make_learning_rate, make_optimizer


def test_optimizer_carries_clipping_ema_and_weight_decay():
    opt = make_optimizer(
        TrainConfig(optimizer="adamw", clipnorm=1.5, ema={"momentum": 0.9}, weight_decay=0.01)
    )
    assert isinstance(opt, keras.optimizers.AdamW)
    assert (opt.clipnorm, opt.use_ema, opt.ema_momentum, opt.weight_decay) == (1.5, True, 0.9, 0.01)
    opt = make_optimizer(
        TrainConfig(optimizer="sgd", global_clipnorm=2.0, optimizer_options={"momentum": 0.9})
    )
    assert opt.global_clipnorm == 2.0 and opt.clipnorm is None and opt.momentum == 0.9
    assert make_optimizer(TrainConfig(optimizer="adamw")).weight_decay == 0.0


def test_clipping_given_twice_is_refused():
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ConfigError, match="set once, as 'train.clipnorm'"):
        TrainConfig(clipnorm=1.0, optimizer_options={"clipnorm": 2.0})
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(clipnorm=1.0, optimizer_options={"global_clipnorm": 2.0})


def test_schedules_are_scaled_only_when_the_guard_can_lower_them():
    guarded = make_optimizer(TrainConfig(schedule="cosine"), steps_per_epoch=5)
    assert isinstance(guarded._learning_rate, Scaled)
    bare = make_optimizer(TrainConfig(schedule="cosine", blowup_guard=False), steps_per_epoch=5)
    assert isinstance(bare._learning_rate, keras.optimizers.schedules.CosineDecay)
    constant = make_optimizer(TrainConfig(learning_rate=0.3))
    assert float(constant.learning_rate.numpy()) == pytest.approx(0.3)


def test_explicit_learning_rate_is_used_as_is():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = make_optimizer(TrainConfig(schedule="cosine", blowup_guard=False), schedule)
    assert opt._learning_rate is schedule
    opt = make_optimizer(TrainConfig(schedule="cosine"), 0.02)  # no steps needed
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.02)


def test_learning_rate_find_must_be_resolved_first():
    with pytest.raises(ConfigError, match="'find' must be resolved"):
        make_learning_rate(TrainConfig(learning_rate="find"))
    with pytest.raises(
        ConfigError,
        match="'train.learning_rate' option must be a number > 0, 'find'.*Did you mean 'find'",
    ):
        TrainConfig(learning_rate="fnd")


def test_compile_options_and_their_checks():
    fast = TrainConfig(execution={"jit_compile": True, "steps_per_execution": 8})
    assert compile_options(fast) == {"jit_compile": True, "steps_per_execution": 8}
    with pytest.raises(
        ConfigError, match="'train.execution.steps_per_execution' option must be >= 1"
    ):
        TrainConfig(execution={"steps_per_execution": 0})
    assert compile_options(TrainConfig()) == {"jit_compile": False, "steps_per_execution": 1}
    with pytest.raises(
        ConfigError,
        match="'train.execution.mixed_precision' option must be one of 'auto', 'float32'",
    ):
        TrainConfig(execution={"mixed_precision": "float16"})
    with pytest.raises(
        ConfigError,
        match="'train.execution.steps_per_execution' option must be 'auto' or an integer",
    ):
        TrainConfig(execution={"steps_per_execution": "fast"})
    with pytest.raises(ConfigError, match="'train.gradient_accumulation' option must be >= 1"):
        TrainConfig(gradient_accumulation=0)
