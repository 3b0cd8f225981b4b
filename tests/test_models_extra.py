"""The resnet factory, and initializers and regularizers in every factory."""

from __future__ import annotations

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.data.preprocess import model_inputs
from kerastrain.models import MODELS, Head, build_model

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


@pytest.mark.slow
def test_resnet_learns_digits_through_fit_pipeline(digits_arrays, tmp_path):
    result = kerastrain.fit_pipeline(
        digits_arrays,
        "resnet",
        seed=0,
        output_dir=str(tmp_path / "run"),
        model_options={"width": 8, "depth": 2, "blocks": 1},
        train={
            "epochs": 6,
            "batch_size": 64,
            "learning_rate": 0.01,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32"},
        },
        export={"formats": []},
        report=NOEXPLAIN,
    )
    # Chance is 0.1. Six epochs of this tiny network scored 0.57-0.86 over
    # seeds 0-3 (0.73-0.83 with the earlier per-row shuffle): at this size the
    # seed's data order matters, so the bar proves learning, not a tuned score.
    assert result.metrics["test"]["accuracy"] > 0.5
    model = result.model
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 2  # one residual block per stage
    # The second stage halves the 8x8 map and doubles the width.
    assert model.get_layer("stage1_block0_out").output_shape == (None, 4, 4, 16)


def test_resnet_depth_and_width_are_options():
    inputs = model_inputs((32, 32, 3), None)
    model = build_model("resnet", inputs, Head(5, "softmax"), {"width": 4, "depth": 3, "blocks": 2})
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Add)]) == 6
    assert model.get_layer("stage2_block1_out").output_shape == (None, 8, 8, 16)
    with pytest.raises(ConfigError, match=r"'model_options.depth' option must be at least 1"):
        build_model("resnet", model_inputs((8, 8, 1), None), Head(2, "softmax"), {"depth": 0})


@pytest.mark.parametrize(
    "name, shape, extra, initializer, expected",
    [
        ("mlp", (30,), {}, "he_normal", "HeNormal"),
        ("cnn", (8, 8, 1), {}, "lecun_uniform", "LecunUniform"),
        (
            "resnet",
            (8, 8, 1),
            {"width": 4, "depth": 1, "blocks": 1},
            "glorot_normal",
            "GlorotNormal",
        ),
        (
            "transfer",
            (8, 8, 1),
            {"backbone": "mobilenet_v2", "weights": None, "dense": 8, "fine_tune_layers": 0},
            "he_uniform",
            "HeUniform",
        ),
    ],
)
def test_every_factory_takes_an_initializer_and_a_regularizer(
    name, shape, extra, initializer, expected
):
    assert name in MODELS
    inputs = model_inputs(shape, None)
    model = build_model(
        name, inputs, Head(3, "softmax"), {"initializer": initializer, "l2": 1e-3, **extra}
    )
    # Every hidden kernel (the spine's mlp and cnn leave their output layer be).
    own = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
        and (layer.name != "output" or name in ("resnet", "transfer"))
    ]
    assert own, name
    for layer in own:
        assert type(layer.kernel_initializer).__name__ == expected, layer.name
        assert layer.kernel_regularizer is not None and np.isclose(
            layer.kernel_regularizer.l2, 1e-3
        ), layer.name
    assert len(model.losses) >= len(own)
