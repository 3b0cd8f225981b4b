"""strategy='model_parallel': weights split over a DTensor mesh of logical CPUs.

The mesh needs logical devices configured before TensorFlow starts, so the
training checks run in their own process (`model_parallel_child.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.config import DistributeConfig, ExportConfig
from kerastrain.data.feed import InMemory, epoch_seeds, make_dataset
from kerastrain.data.layers import LayerNorm, PositionEmbedding, TokenEmbedding
from kerastrain.mesh import mesh_config, mesh_shape, plan_layouts, weight_paths

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_strategy_refused_with_the_alternatives():
    with pytest.raises(ConfigError) as caught:
        kerastrain.fit_pipeline("digits", strategy="pipeline")
    text = str(caught.value)
    for alternative in ("model_parallel", "recompute", "mixed_precision", "gradient_accumulation"):
        assert alternative in text


def test_mesh_that_does_not_fit_the_devices_names_both():
    with pytest.raises(ConfigError) as caught:
        mesh_shape(DistributeConfig(mesh={"batch": 3, "model": 2}), devices=4)
    assert "3 x 2" in str(caught.value) and "has 4" in str(caught.value)
    assert mesh_shape(DistributeConfig(), devices=4) == (1, 4)
    assert mesh_shape(DistributeConfig(mesh={"batch": 2}), devices=4) == (2, 2)


def test_mesh_options_refused_without_model_parallel_and_unsupported_options_refused():
    with pytest.raises(ConfigError, match="distribute.mesh"):
        kerastrain.fit_pipeline("digits", distribute={"mesh": {"model": 2}})
    with pytest.raises(ConfigError, match="gradient_accumulation"):
        kerastrain.fit_pipeline(
            "digits", strategy="model_parallel", train={"gradient_accumulation": 2}
        )
    with pytest.raises(ConfigError, match="distribute.layouts"):
        DistributeConfig(layouts={"dense.*kernel": ["rows", None]})


def test_streamed_data_is_refused_before_training(tmp_path):
    # Each device's iterator would reshuffle a stream: the mesh would mix rows.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    frame["label"] = (frame["a"] + frame["b"] > 0).astype(int)
    frame.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(ConfigError, match="in_memory_mb"):
        kerastrain.fit_pipeline(
            str(tmp_path / "table.csv"),
            "mlp",
            strategy="model_parallel",
            data_options={"target": "label", "in_memory_mb": 0.0},
            train={"epochs": 1},
            output_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_by_two_mesh_trains_like_one_device_exports_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "model_parallel_child.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    # The first 3 epochs' training losses against one device at the same global batch and seed
    # (the issue asks 1e-3; every device fed the same batches in one device's order, they
    # match to float rounding: 1.3e-7 measured).
    assert max(report["rel"]) < 1e-4, report
    # Each split kernel's piece on a device holds 1/M of its columns (or rows), M=2.
    whole, pieces = report["shards"]["dense_0/kernel:0"]
    assert all(piece == [whole[0], whole[1] // 2] for piece in pieces)
    whole, pieces = report["shards"]["dense_1/kernel:0"]
    assert all(piece == [whole[0] // 2, whole[1]] for piece in pieces)
    # The exported TFLite model answers like the sharded model.
    assert report["tflite_max_diff"] <= ExportConfig().atol
    # The blow-up guard (on in these runs) restores the split weights and optimizer slots
    # after a NaN loss and halves the learning rate.
    assert report["guard_split_slots"] >= 4
    assert report["guard_weights_diff"] == 0 and report["guard_slots_diff"] == 0, report
    assert report["guard_lr"][1] == pytest.approx(report["guard_lr"][0] / 2)
    # Killed after epoch 2 of 4, rerun: resumed at epoch 3, no epoch lost.
    assert report["crashed"] == "simulated crash"
    assert report["resumed_epochs"] == 4
    assert "resumed at epoch 3" in report["resumed_reason"]


def _planned(model, overrides=None):
    return plan_layouts(model, {"batch": 1, "model": 2}, overrides)


def test_default_plan_pairs_dense_layers_and_splits_embedding_not_conv():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="d1")(x)
    x = keras.layers.Dense(16, name="d2")(x)
    x = keras.layers.Dense(3, name="out")(x)
    model = keras.Model(inputs, x)
    plan = _planned(model)
    # DTensor's convolution takes no split filter: the conv (and its batch norm) stay whole.
    assert "conv.kernel" not in plan.specs and "fully replicated" in plan.replicated["conv"]
    assert "bn.gamma" not in plan.specs
    with pytest.raises(ConfigError, match="fully replicated"):
        _planned(model, {r"conv\.kernel": [None, None, None, "model"]})
    assert plan.specs["d1.kernel"] == (None, "model") and plan.specs["d1.bias"] == ("model",)
    assert plan.specs["d2.kernel"] == ("model", None) and "d2.bias" not in plan.specs
    assert "not divisible by 2" in plan.replicated["out"]

    tokens = keras.Input((5,), dtype="int32")
    table = keras.layers.Embedding(20, 6, name="emb")(tokens)
    odd = keras.layers.Embedding(20, 5, name="odd")(tokens)
    plan = _planned(keras.Model(tokens, [table, odd]))
    assert plan.specs["emb.embeddings"] == (None, "model")
    assert "odd" in plan.replicated


def test_layout_overrides_replace_the_plan_and_bad_ones_are_refused():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="d2")(x))
    plan = _planned(model, {r"d1\.kernel": [None, None], r"d2\.kernel": ["model", None]})
    assert "d1.kernel" not in plan.specs and plan.specs["d2.kernel"] == ("model", None)
    with pytest.raises(ConfigError, match="matches a weight path"):
        _planned(model, {"nothing.*": [None]})
    with pytest.raises(ConfigError, match="2 entries"):
        _planned(model, {r"d1\.kernel": ["model"]})
    odd = keras.Model(inputs, keras.layers.Dense(3, name="d3")(inputs))
    with pytest.raises(ConfigError, match="not divisible"):
        _planned(odd, {r"d3\.bias": ["model"]})


def test_attention_split_on_heads_and_the_output_projection_on_its_input_heads():
    tokens = keras.Input((6,), dtype="int32")
    x = TokenEmbedding(20, 8, 6, name="tokens")(tokens)
    x = PositionEmbedding(6, name="positions")(x)
    h = LayerNorm(name="norm")(x)
    h = keras.layers.MultiHeadAttention(4, 2, name="att")(h, h)
    x = keras.layers.Add()([x, h])
    h = keras.layers.Dense(16, activation="gelu", name="mlp_in")(x)
    x = keras.layers.Add()([x, keras.layers.Dense(8, name="mlp_out")(h)])
    odd = keras.layers.MultiHeadAttention(3, 2, name="odd")(x, x)
    model = keras.Model(tokens, [x, odd])
    plan = _planned(model)
    # The LayoutMap names a sub-layer's weight by its object path (the output
    # projection's variable is called attention_output, its path _output_dense).
    paths = set(weight_paths(model).values())
    assert {"att._query_dense.kernel", "att._output_dense.kernel"} <= paths
    for part in ("query", "key", "value"):
        assert plan.specs[f"att._{part}_dense.kernel"] == (None, "model", None)
        assert plan.specs[f"att._{part}_dense.bias"] == ("model", None)
    assert plan.specs["att._output_dense.kernel"] == ("model", None, None)
    assert "att._output_dense.bias" not in plan.specs
    assert "2 of 4 per device" in plan.split["att"]
    assert plan.specs["mlp_in.kernel"] == (None, "model")
    assert plan.specs["mlp_out.kernel"] == ("model", None)
    assert "not divisible" in plan.replicated["odd"]
    for kept in ("tokens", "positions", "norm"):
        assert kept in plan.replicated and not any(p.startswith(kept) for p in plan.specs)


def test_mesh_config_unfuses_batch_normalization_only_in_the_copy():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(x))
    config = model.get_config()
    rebuilt = keras.Model.from_config(mesh_config(config))
    assert rebuilt.get_layer("bn").fused is False
    assert config == model.get_config()  # the copy only


@pytest.mark.slow
@pytest.mark.subprocess
def test_transformer_cnn_and_embedding_train_on_a_two_by_two_mesh(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "model_parallel_scale_child.py"),
            str(tmp_path),
            str(ROOT / "tests"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    text = report["text"]
    # Raw strings in (the tokenizer runs before the mesh), the first epoch's
    # loss of one device at the same global batch, an exported SavedModel
    # that answers like the gathered model.
    assert text["takes_strings"]
    # (Measured: 0.8591 on the mesh and on one device; 0.8195 before every
    # device's data iterator yielded the same batches.)
    assert np.isfinite(text["sharded"])
    assert text["sharded"] == pytest.approx(text["single"], rel=1e-5)
    assert text["savedmodel_max_abs_diff"] <= ExportConfig().atol
    # Each attention projection's piece holds half of the 2 heads.
    for part in ("query", "key", "value"):
        whole, pieces = text["shards"][f"block0_attention/{part}/kernel:0"]
        assert whole[1] == 2 and all(p == [whole[0], 1, whole[2]] for p in pieces)
    whole, pieces = text["shards"]["block0_attention/attention_output/kernel:0"]
    assert all(p == [1, *whole[1:]] for p in pieces)
    whole, pieces = text["shards"]["block0_mlp_in/kernel:0"]
    assert all(p == [whole[0], whole[1] // 2] for p in pieces)
    # A CNN with batch normalization (unfused on the mesh, the conv whole) and
    # an Embedding (its sparse gradient applied dense) train like one device.
    for kind in ("cnn", "embedding"):
        case = report[kind]
        assert case["sharded"] == pytest.approx(case["single"], rel=1e-5), case
        assert case["moved"] > 1e-3
    assert report["cnn"]["split"] == ["hidden", "out"] and "conv" in report["cnn"]["replicated"]
    assert report["embedding"]["split"] == ["emb"]


def test_epoch_seeds_give_every_iterator_the_epochs_a_single_device_fit_sees():
    # DTensorDataset opens one iterator per device: each must yield the same batches, and
    # in the order tf_keras's fit sees over the reshuffling dataset (it opens one iterator
    # it never reads, then one per epoch).
    x = np.arange(40, dtype="float32").reshape(20, 2)
    memory = InMemory(x, np.arange(20))
    rows = np.arange(20)

    def epoch_of(iterator):
        return np.concatenate([xb.numpy()[:, 0] for xb, _ in iterator])

    plain = make_dataset(memory, rows, 8, training=True, seed=5)
    iter(plain)  # the iterator fit opens and drops
    single = [epoch_of(iter(plain)) for _ in range(3)]
    assert not np.array_equal(single[0], single[1])  # reshuffled every epoch
    fixed = make_dataset(memory, rows, 8, training=True, seed=5, epoch_seeds=epoch_seeds(5, 3))
    first, second = epoch_of(iter(fixed)), epoch_of(iter(fixed))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, np.concatenate(single))
