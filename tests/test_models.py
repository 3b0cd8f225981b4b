"""Factories, the registry, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain import ConfigError
from kerastrain._keras import ensure_tf_keras, is_keras3_object, keras
from kerastrain.data.preprocess import Standardizer, model_inputs
from kerastrain.models import (
    MODELS,
    Head,
    build_model,
    factory_for,
    factory_options,
    register_model,
)

HEAD10 = Head(10, "softmax")


def test_auto_picks_mlp_for_rows_and_cnn_for_images():
    assert factory_for("auto", (30,)) is MODELS["mlp"]
    assert factory_for("auto", (8, 8, 1)) is MODELS["cnn"]
    assert factory_for("auto", (28, 28)) is MODELS["cnn"]


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28), (64, 48, 3)])
def test_cnn_builds_for_images_of_any_size(shape):
    model = build_model("cnn", model_inputs(shape, None), HEAD10)
    out = model(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_options_reach_the_layers():
    model = build_model(
        "mlp",
        model_inputs((5,), None),
        Head(1, "sigmoid"),
        {
            "width": 7,
            "depth": 3,
            "dropout": 0.0,
            "l2": 0.01,
            "initializer": "he_normal",
            "batch_norm": True,
        },
    )
    dense = [layer for layer in model.layers if layer.name.startswith("dense_")]
    assert [layer.units for layer in dense] == [7, 7, 7]
    assert isinstance(dense[0].kernel_initializer, keras.initializers.HeNormal)
    assert dense[0].kernel_regularizer is not None
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert model.layers[-1].dtype == "float32"


def test_unknown_model_option_lists_the_accepted_ones():
    with pytest.raises(
        ConfigError, match=r"'model_options.widht' for model 'mlp'.*width.*Did you mean 'width'"
    ):
        build_model("mlp", model_inputs((5,), None), Head(1, "sigmoid"), {"widht": 8})
    with pytest.raises(ConfigError, match="initializer"):
        build_model(
            "mlp", model_inputs((5,), None), Head(1, "sigmoid"), {"initializer": "zeros_like"}
        )
    assert "width" in factory_options(MODELS["mlp"])


def test_unknown_model_name_suggests_a_close_one():
    with pytest.raises(ConfigError, match="Did you mean 'cnn'"):
        build_model("cnnn", model_inputs((8, 8, 1), None), HEAD10)


def test_standardization_is_the_first_layer_of_the_model():
    stats = Standardizer(np.array([2.0], np.float32), np.array([4.0], np.float32))
    model = build_model("mlp", model_inputs((1,), stats), Head(1, "linear"), {"depth": 0})
    normalize = model.get_layer("normalize")
    np.testing.assert_allclose(normalize(np.array([[4.0]], np.float32)).numpy(), [[1.0]])


def test_user_callable_with_raw_inputs_gets_preprocessing_in_front():
    def tiny(input_shape, num_outputs, units=4):
        inp = keras.Input(input_shape)
        return keras.Model(
            inp,
            keras.layers.Dense(num_outputs, activation="softmax")(keras.layers.Dense(units)(inp)),
        )

    stats = Standardizer(np.zeros(3, np.float32), np.ones(3, np.float32))
    model = build_model(tiny, model_inputs((3,), stats), Head(2, "softmax"), {"units": 5})
    assert model.get_layer("normalize") is not None and model.output_shape == (None, 2)
    with pytest.raises(ConfigError, match="Unknown option 'model_options.unit'"):
        build_model(tiny, model_inputs((3,), stats), Head(2, "softmax"), {"unit": 5})


def test_built_model_with_wrong_shapes_is_refused():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(4,\)"):
        build_model(model, model_inputs((5,), None), Head(3, "softmax"))
    with pytest.raises(ConfigError, match="has 3 outputs but the task needs 10"):
        build_model(model, model_inputs((4,), None), HEAD10)


def test_keras3_objects_are_refused_with_the_reason():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    assert is_keras3_object(model) and not is_keras3_object(keras.Sequential())
    with pytest.raises(
        ConfigError, match="Keras 3 object.*TensorFlow Model Optimization.*tf_keras"
    ):
        ensure_tf_keras(model, "model")
    with pytest.raises(ConfigError, match="Keras 3"):
        build_model(model, model_inputs((4,), None), Head(2, "softmax"))


def test_register_model_refuses_to_shadow_silently():
    def mine(inputs, head):
        return keras.Model(inputs.inputs, keras.layers.Dense(head.units)(inputs.features))

    register_model("mine_for_test", mine)
    try:
        assert build_model(
            "mine_for_test", model_inputs((3,), None), Head(1, "linear")
        ).output_shape == (None, 1)
        with pytest.raises(ConfigError, match="already registered"):
            register_model("mine_for_test", lambda inputs, head: None)
    finally:
        MODELS.pop("mine_for_test")
