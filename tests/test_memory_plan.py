"""The memory plan: estimates from layer shapes, and a run that cannot fit
refused before its first step with suggestions that make it fit."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig, TrainConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.errors import ResourceError
from kerastrain.models import Head, build_model
from kerastrain.training import run_training
from kerastrain.training.flops import layer_calls
from kerastrain.training.memory import (
    MiB,
    attention_bytes,
    check_memory,
    memory_section,
    optimizer_slots,
    plan_memory,
)


def _mlp(width=32, depth=2, **options):
    inputs = model_inputs((10,), None, None)
    return build_model(
        "mlp", inputs, Head(1, "sigmoid"), {"width": width, "depth": depth, **options}
    )


def test_parameters_are_four_bytes_per_parameter_and_the_parts_follow_the_shapes():
    model = _mlp(dropout=0.0)
    plan = plan_memory(model, TrainConfig(), batch_size=16, precision="float32")
    assert plan.parameters == 4 * model.count_params()
    assert plan.gradients == 4 * model.count_params()  # all trainable
    assert plan.optimizer_slots == 2 * 4 * model.count_params()  # Adam: two moments
    # Input (10) + dense_0, act_0, dense_1, act_1 (32 each) + output (1), float32.
    assert plan.activations == 16 * 4 * (10 + 4 * 32 + 1)
    assert plan.fits and plan.suggestions == ()
    half = plan_memory(model, TrainConfig(), batch_size=16, precision="mixed_bfloat16")
    assert half.activations == 16 * (4 * 10 + 2 * 4 * 32 + 4 * 1)  # the head stays float32


def test_optimizer_slots_and_accumulation_and_recompute_change_the_estimate():
    assert optimizer_slots(TrainConfig(optimizer="sgd")) == 0
    assert optimizer_slots(TrainConfig(optimizer="sgd", optimizer_options={"momentum": 0.9})) == 1
    assert optimizer_slots(TrainConfig(optimizer="adam", ema=True)) == 3
    model = _mlp(width=64, depth=8, residual=True, dropout=0.0)
    plain = plan_memory(model, TrainConfig(), batch_size=64, precision="float32")
    accumulating = plan_memory(
        model, TrainConfig(gradient_accumulation=2), batch_size=64, precision="float32"
    )
    assert accumulating.gradients == 2 * plain.gradients
    recomputed = plan_memory(model, TrainConfig(recompute=True), batch_size=64, precision="float32")
    assert recomputed.activations < 0.6 * plain.activations


def _prepared():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y


def _train(train, x, y, callbacks=()):
    cfg = PipelineConfig(
        data=(x, y),
        model="mlp",
        model_options={"width": 256, "depth": 3, "dropout": 0.0},
        seed=0,
        train={"epochs": 1, "verbose": 0, "early_stopping": None, **train},
    )
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    return run_training(
        cfg.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec=cfg.model,
        model_options=cfg.model_options,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        callbacks=callbacks,
    )


class _Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.steps += 1


@pytest.mark.slow
def test_a_run_over_the_limit_is_refused_before_its_first_step_and_a_suggestion_fits():
    x, y = _prepared()
    train = {"batch_size": 512, "memory_limit_mb": 3, "execution": {"mixed_precision": "float32"}}
    steps = _Steps()
    with pytest.raises(ResourceError, match=r"train\.memory_limit_mb") as caught:
        _train(train, x, y, [steps])
    assert isinstance(caught.value, MemoryError)
    assert steps.steps == 0
    plan = caught.value.plan
    assert plan.total > 3 * MiB and plan.available == 3 * MiB
    text = str(caught.value)
    for suggestion in plan.suggestions:
        assert suggestion.text in text
    kinds = {
        next(iter(s.change["train"])) if "train" in s.change else "strategy"
        for s in plan.suggestions
    }
    assert {"batch_size", "execution", "recompute", "strategy"} <= kinds
    smaller = next(
        s
        for s in plan.suggestions
        if s.change == {"train": {"batch_size": s.change["train"]["batch_size"]}}
    )
    assert smaller.fits
    _, result = _train({**train, **smaller.change["train"]}, x, y, [steps])
    assert steps.steps > 0
    assert result.memory_plan["fits"] and result.memory_plan["total"] == smaller.total
    section = memory_section(result.memory_plan)
    assert section["title"] == "Memory plan" and section["rows"][-1]["MiB"] == 3.0


def test_the_device_memory_is_the_hosts_ram_shared_by_the_local_devices():
    from kerastrain.training.memory import device_memory

    ram, source = device_memory(tf.distribute.get_strategy())  # the default strategy
    assert source == "host RAM" and ram > 2**28
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:0"][:1])
    assert device_memory(mirrored)[0] == ram


@pytest.mark.slow
def test_fit_pipeline_keeps_the_plan_in_its_result_and_report(tmp_path):
    from kerastrain import fit_pipeline

    result = fit_pipeline(
        "iris",
        "mlp",
        model_options={"width": 8, "depth": 1},
        train={"epochs": 1, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    plan = result.memory_plan
    assert plan["parameters"] == 4 * result.model.count_params()
    assert plan["fits"] and plan["source"] == "host RAM" and plan["available"] > 0
    report = result.report_path.read_text()
    assert "Memory plan" in report and "optimizer_slots" in report


def test_a_subclassed_model_is_planned_without_its_inside():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 5), np.float32))
    plan = plan_memory(model, TrainConfig(optimizer="sgd"), batch_size=4, precision="float32")
    assert plan.parameters == plan.gradients == 4 * 18 and plan.optimizer_slots == 0


def _sequence_transformer(length, **options):
    inputs = model_inputs((length, 3), None, None)
    options = {"layers": 2, "heads": 4, "d_model": 16, "dropout": 0.0, **options}
    return build_model("transformer", inputs, Head(1, "sigmoid"), options)


def test_attention_scores_and_softmax_are_counted_batch_heads_length_squared():
    model = _sequence_transformer(64)
    plan = plan_memory(model, TrainConfig(), batch_size=8, precision="float32")
    outputs = (
        sum(
            int(np.prod(t.shape[1:])) * t.dtype.size
            for node in layer_calls(model)
            for t in tf.nest.flatten(node.outputs)
        )
        + int(np.prod(model.inputs[0].shape[1:])) * 4
    )
    # By hand: 2 blocks x (scores + softmax) x 4 heads x 64 x 64 float32 values.
    attention = 2 * 2 * 4 * 64 * 64 * 4
    assert plan.activations == 8 * (outputs + attention)
    layer = next(lay for lay in model.layers if isinstance(lay, keras.layers.MultiHeadAttention))
    assert attention_bytes(layer, 64, 64) == attention // 2
    assert attention_bytes(layer, 64, 64, half=True) == attention // 4


def test_a_long_max_length_is_refused_by_its_attention_activations():
    limit = 40 * MiB
    train = TrainConfig(memory_limit_mb=40)
    short = plan_memory(
        _sequence_transformer(64), train, batch_size=32, precision="float32", available=limit
    )
    check_memory(short)  # fits
    model = _sequence_transformer(512)
    long = plan_memory(model, train, batch_size=32, precision="float32", available=limit)
    # 2 blocks x 2 x 4 heads x 512² float32 values per example: 16 MiB, x 32 rows.
    assert long.activations >= 32 * 2 * 2 * 4 * 512 * 512 * 4
    with pytest.raises(ResourceError, match="activations"):
        check_memory(long)
