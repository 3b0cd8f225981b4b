"""Channel pruning: the cut removes the stated units, the smaller model
answers like the original with those units zeroed, a layer the cut cannot
follow stops it with the reason, and the options are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerastrain._keras import keras
from kerastrain.compress import channels as ch
from kerastrain.config.compress import CompressConfig, PruneConfig
from kerastrain.data.preprocess import Standardizer, model_inputs
from kerastrain.errors import ConfigError
from kerastrain.export import load_predictor
from kerastrain.models import Head, cnn, mlp, resnet
from kerastrain.pipeline import fit_pipeline

HEAD = Head(10, "softmax")
CUT_ALL = {"structure": "channels", "target_ratio": 0.5, "skip_first_conv": False}


def _randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Weights and BatchNorm statistics far from their initial values, so that
    a wrong slice (a swapped unit, a stale statistic) changes the answers."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            continue
        new = []
        weights = layer.get_weights()
        for i, w in enumerate(weights):
            values = rng.normal(0, 0.5, w.shape).astype(np.float32)
            if isinstance(layer, keras.layers.BatchNormalization) and i == len(weights) - 1:
                values = np.abs(values) + 0.1  # moving variance
            new.append(values)
        layer.set_weights(new)
    return model


def _standardized(shape: tuple[int, ...]):
    channels = shape[-1]
    return model_inputs(shape, Standardizer(np.full(channels, 0.5), np.full(channels, 2.0)))


def _mlp() -> keras.Model:
    return mlp(_standardized((12,)), HEAD, width=16, depth=2, batch_norm=True)


def _cnn() -> keras.Model:
    return cnn(_standardized((8, 8, 1)), HEAD, filters=8, dense=16, batch_norm=True)


def _resnet() -> keras.Model:
    return resnet(_standardized((8, 8, 1)), HEAD, width=4, depth=2, blocks=2)


def _branches() -> keras.Model:
    """Concatenate, a tie between a Dense and a pooled conv path, max pooling."""
    L = keras.layers
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(x)
    b = L.Conv2D(4, 1, name="b")(x)
    joined = L.Concatenate(name="join")([L.ReLU(name="relu_a")(a), b])
    pooled = L.MaxPooling2D(2, name="pool")(L.BatchNormalization(name="bn")(joined))
    c = L.Conv2D(8, 3, padding="same", activation="relu", name="c")(pooled)
    flat = L.GlobalAveragePooling2D(name="gap")(c)
    side = L.Dense(8, name="side")(L.GlobalMaxPooling2D(name="gmp")(pooled))
    merged = L.Multiply(name="gate")([L.Dense(8, name="d")(flat), side])
    out = L.Dense(5, activation="softmax", name="output")(L.Dropout(0.2, name="drop")(merged))
    return keras.Model(x, out)


def _sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(10, activation="tanh", name="h1"),
            keras.layers.Dense(7, activation="relu", name="h2"),
            keras.layers.Dense(3, name="output"),
        ]
    )


#: The factory, its input shape and the units the cut must leave.
MODELS = {
    "mlp": (_mlp, (12,), {"dense_0": (16, 8), "dense_1": (16, 8), "output": (10, 10)}),
    "cnn": (_cnn, (8, 8, 1), {"conv_0": (8, 4), "conv_1": (16, 8), "dense": (16, 8)}),
    "resnet": (
        _resnet,
        (8, 8, 1),
        {
            # the stem and every second conv of stage 0 are tied by its Adds
            "stem_conv": (4, 2),
            "stage0_block0_conv1": (4, 2),
            "stage0_block0_conv2": (4, 2),
            "stage0_block1_conv2": (4, 2),
            "stage1_block0_conv1": (8, 4),
            "stage1_block0_proj": (8, 4),
            "stage1_block1_conv2": (8, 4),
            "output": (10, 10),
        },
    ),
    "branches": (
        _branches,
        (8, 8, 3),
        {"a": (6, 3), "b": (4, 2), "c": (8, 4), "d": (8, 4), "side": (8, 4), "output": (5, 5)},
    ),
    # floor(0.5 * 7) = 3 removed; tanh(0) = 0 is no special case: the next
    # layer's inputs are what is cut
    "sequential": (_sequential, (6,), {"h1": (10, 5), "h2": (7, 4), "output": (3, 3)}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_smaller_model_has_the_stated_units_and_answers_like_the_masked_original(name):
    build, shape, expected = MODELS[name]
    model = _randomize(build())
    x = np.random.default_rng(1).normal(size=(32, *shape)).astype(np.float32)

    plan = ch.plan_channels(model, PruneConfig(**CUT_ALL))
    smaller = ch.cut_channels(model, plan)
    masked = ch.zero_channels(model, plan)

    units = ch.units_by_layer(smaller)
    for layer, (before, after) in expected.items():
        assert plan.units[layer] == (before, after), layer
        assert units[layer] == after, layer
    assert smaller.count_params() < model.count_params()
    want = masked.predict(x, verbose=0)
    got = smaller.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the masking removed something that mattered, so the match is not trivial
    assert np.abs(model.predict(x, verbose=0) - want).max() > 1e-3


def test_the_add_branches_of_a_residual_block_keep_the_same_channels():
    model = _randomize(_resnet())
    plan = ch.plan_channels(model, PruneConfig(**CUT_ALL))
    for block in ("stage1_block0", "stage1_block1"):
        add = plan.in_masks[f"{block}_add"]
        np.testing.assert_array_equal(add[0], add[1])
    np.testing.assert_array_equal(
        plan.out_masks["stage1_block0_proj"], plan.out_masks["stage1_block1_conv2"]
    )


def test_the_units_with_the_lowest_l1_norm_are_removed():
    x = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="output")(hidden))
    kernel = np.array([[1, 5, 0.1, 2], [1, 5, 0.1, -2], [1, 5, 0.1, 2]], np.float32)
    model.get_layer("hidden").set_weights([kernel, np.zeros(4, np.float32)])
    plan = ch.plan_channels(model, PruneConfig(structure="channels", target_ratio=0.5))
    np.testing.assert_array_equal(plan.out_masks["hidden"], [False, True, False, True])
    l2 = PruneConfig(structure="channels", target_ratio=0.75, criterion="l2")
    np.testing.assert_array_equal(ch.plan_channels(model, l2).out_masks["hidden"], [0, 1, 0, 0])


def test_batch_norm_scale_counts_in_the_score():
    """A conv filter with large weights whose BatchNorm scales it to nothing
    is the one removed (network slimming's gamma folded into the norm)."""
    x = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(x)
    bn = keras.layers.BatchNormalization(name="bn")(conv)
    flat = keras.layers.Flatten()(bn)
    model = keras.Model(x, keras.layers.Dense(2, name="output")(flat))
    model.get_layer("conv").set_weights([np.array([[[[10.0, 1.0]]]], np.float32)])
    model.get_layer("bn").set_weights(
        [np.array([0.001, 1.0]), np.zeros(2), np.zeros(2), np.ones(2)]
    )
    plan = ch.plan_channels(model, PruneConfig(structure="channels", skip_first_conv=False))
    np.testing.assert_array_equal(plan.out_masks["conv"], [False, True])


class Twice(keras.layers.Layer):
    """A layer the cut does not know."""

    def call(self, inputs):
        return inputs * 2.0


def test_an_unknown_layer_stops_the_cut_there_with_the_reason():
    x = keras.Input((6,))
    a = keras.layers.Dense(8, activation="relu", name="a")(x)
    b = keras.layers.Dense(8, activation="relu", name="b")(Twice(name="twice")(a))
    c = keras.layers.Dense(8, activation="relu", name="c")(
        keras.layers.LayerNormalization(name="ln")(b)
    )
    d = keras.layers.Dense(8, activation="relu", name="d")(c)
    model = _randomize(keras.Model(x, keras.layers.Dense(3, name="output")(d)))

    plan = ch.plan_channels(model, PruneConfig(structure="channels"))

    assert "twice (Twice)" in plan.kept["a"] and "cannot follow" in plan.kept["a"]
    assert "ln (LayerNormalization)" in plan.kept["b"]
    assert "across the channels" in plan.kept["b"]
    assert "never cut" in plan.kept["output"]
    assert plan.units["a"] == (8, 8) and plan.units["b"] == (8, 8)
    assert plan.units["c"] == (8, 4) and plan.units["d"] == (8, 4)  # after it, the cut goes on
    smaller = ch.cut_channels(model, plan)
    rows = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    np.testing.assert_allclose(
        smaller.predict(rows, verbose=0),
        ch.zero_channels(model, plan).predict(rows, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_a_skipped_layer_keeps_every_layer_tied_to_it():
    """Default skip_first_conv keeps the stem, hence all of stage 0."""
    model = _resnet()
    plan = ch.plan_channels(model, PruneConfig(structure="channels"))
    assert "skip_first_conv" in plan.kept["stem_conv"]
    assert "skip_first_conv" in plan.kept["stage0_block1_conv2"]
    assert plan.units["stage0_block0_conv1"] == (4, 2)  # not tied: cut
    assert plan.units["stage1_block0_conv1"] == (8, 4)


def test_cut_schedule_ends_at_the_target_and_spends_every_epoch():
    config = PruneConfig(structure="channels", target_ratio=0.5, epochs=4)
    cuts = ch.cut_schedule(config)
    assert [r for r, _ in cuts][-1] == 0.5 and len(cuts) == 2
    assert cuts[0][0] < 0.5 and sum(e for _, e in cuts) == 4
    constant = config.replace(schedule="constant")
    assert ch.cut_schedule(constant) == [(0.5, 4)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"structure": "channels", "target_sparsity": 0.5}, "target_sparsity"),
        ({"structure": "channels", "frequency": 10}, "frequency"),
        ({"target_ratio": 0.5}, "target_ratio"),
        ({"structure": "2:4", "criterion": "l1"}, "criterion"),
    ],
)
def test_channel_options_are_refused_where_they_do_not_apply(options, match):
    with pytest.raises(ConfigError, match=match):
        PruneConfig.from_dict(options)


def test_prune_may_list_channels_then_weights_in_that_order():
    config = CompressConfig.from_dict(
        {"prune": [{"structure": "channels"}, {"target_sparsity": 0.5}]}
    )
    assert config.channel_pruning.target_ratio == 0.5
    assert config.weight_pruning.target_sparsity == 0.5
    with pytest.raises(ConfigError, match="'channels' first"):
        CompressConfig.from_dict({"prune": [{"target_sparsity": 0.5}, {"structure": "channels"}]})


def test_a_bad_layer_name_is_refused_before_anything_trains():
    with pytest.raises(ConfigError, match="Did you mean 'dense_1'"):
        ch.plan_channels(_mlp(), PruneConfig(structure="channels", skip=["dense_l"]))
    with pytest.raises(ConfigError, match="'bn_0' .BatchNormalization., which cannot be cut"):
        ch.plan_channels(_mlp(), PruneConfig(structure="channels", layers=["bn_0"]))


@pytest.mark.slow
def test_fit_pipeline_cuts_channels_then_prunes_and_exports_a_smaller_tflite(
    digits_arrays, tmp_path
):
    result = fit_pipeline(
        digits_arrays,
        "cnn",
        seed=0,
        output_dir=str(tmp_path),
        model_options={"filters": 8, "dense": 32},
        report={"explain": "none"},
        train={"epochs": 2, "verbose": 0, "early_stopping": None},
        compress={
            "prune": [
                # two cuts (44% then 50% of the original units), an epoch each
                {"structure": "channels", "target_ratio": 0.5, "epochs": 2, "end_epoch": 2},
                {"target_sparsity": 0.5, "epochs": 1},
            ]
        },
        # int8 of a 2-epoch model: more close calls between classes than the
        # default 0.98 agreement allows for; the float32 file is held exactly
        export={
            "formats": ["tflite"],
            "tflite": ["float32", "int8"],
            "latency_runs": 5,
            "min_agreement": 0.95,
        },
    )
    summary = json.loads((tmp_path / "compression.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["channels", "channels", "prune"]
    assert "44% of the units cut" in summary["steps"][0]["detail"]
    assert "conv_1 9->8" in summary["steps"][1]["detail"]
    assert summary["units"] == {
        "conv_0": [8, 8],
        "conv_1": [16, 8],
        "dense": [32, 16],
        "output": [10, 10],
    }
    assert "skip_first_conv" in summary["kept_whole"]["conv_0"]
    assert all(v >= 0.495 for v in summary["sparsity"].values())
    assert ch.units_by_layer(result.model)["conv_1"] == 8
    baseline = result.metrics["uncompressed_tflite"]
    tflite = result.metrics["tflite"]
    assert tflite["bytes"] < 0.5 * baseline["bytes"]
    # the export's verification passed and the file answers like the model
    assert tflite["agreement"] >= 0.99 and result.metrics["tflite_int8"]["agreement"] >= 0.95
    x = digits_arrays[0][:16]
    predictor = load_predictor(result.artifacts["tflite"])
    np.testing.assert_allclose(
        predictor(x), result.model.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )


@pytest.mark.slow
def test_channel_pruning_composes_with_clustering_and_qat_into_int8(digits_arrays, tmp_path):
    result = fit_pipeline(
        digits_arrays,
        "cnn",
        seed=0,
        output_dir=str(tmp_path),
        model_options={"filters": 8, "dense": 32},
        report={"explain": "none"},
        train={"epochs": 3, "verbose": 0, "early_stopping": None},
        compress={
            "prune": {"structure": "channels", "target_ratio": 0.5, "epochs": 1},
            "cluster": {"clusters": 8, "epochs": 1},
            "quantize": "qat",
            "quantize_epochs": 1,
        },
        export={"formats": ["tflite"], "tflite": "int8", "latency_runs": 5, "min_agreement": 0.95},
    )
    summary = json.loads((tmp_path / "compression.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["channels", "cluster", "qat"]
    assert summary["units"]["dense"] == [32, 16] and summary["units"]["conv_1"] == [16, 8]
    assert all(n <= 8 for n in summary["unique_values"].values()), summary["unique_values"]
    int8 = result.metrics["tflite_int8"]
    # a tiny model: int8's fixed cost (scales, zero points) weighs; 2.7x measured
    assert int8["bytes"] < result.metrics["uncompressed_tflite"]["bytes"] / 2.5
    assert int8["agreement"] >= 0.95
