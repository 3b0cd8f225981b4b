"""Transfer learning: Keras Applications backbones, local weights, the
two-phase schedule inside one fit_pipeline call, and a proof on real data
that transfer beats training from scratch on few labelled examples."""

from __future__ import annotations

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.data.preprocess import model_inputs
from kerastrain.models import Head, build_model, fine_tune_plan

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_b0", "resnet50"])
def test_application_backbones_build_frozen_with_a_new_head(backbone):
    model = build_model(
        "transfer",
        model_inputs((8, 8, 1), None),
        Head(3, "softmax"),
        {"backbone": backbone, "weights": None, "input_scale": 255 / 16},
    )
    base = model.get_layer("backbone")
    assert base.input_shape == (None, 32, 32, 3)  # grayscale 8x8 -> RGB 32x32
    assert not base.trainable
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"output"}
    out = model.predict(np.random.default_rng(0).uniform(0, 16, (2, 8, 8, 1)), verbose=0)
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_weights_from_a_local_file(tmp_path):
    reference = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    reference.save_weights(tmp_path / "mobilenet_v2_notop.h5")
    model = build_model(
        "transfer",
        model_inputs((32, 32, 3), None),
        Head(1, "sigmoid"),
        {"weights": str(tmp_path / "mobilenet_v2_notop.h5")},
    )
    for got, expected in zip(model.get_layer("backbone").weights, reference.weights):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    with pytest.raises(
        ConfigError,
        match=r"'model_options.weights' option must be 'imagenet', "
        r"None, or the path of an existing weights file",
    ):
        build_model(
            "transfer",
            model_inputs((32, 32, 3), None),
            Head(1, "sigmoid"),
            {"weights": str(tmp_path / "missing.h5")},
        )


@pytest.mark.slow
def test_two_phases_in_one_fit_pipeline_call_keep_batchnorm_frozen(digits_arrays, tmp_path):
    x, y = digits_arrays
    backbone = build_model(
        "cnn",
        model_inputs((8, 8, 1), None),
        Head(10, "softmax"),
        {"filters": 4, "dense": 16, "batch_norm": True},
    )
    before = {name: backbone.get_layer(name).kernel.numpy() for name in ("conv_0", "conv_1")}
    result = kerastrain.fit_pipeline(
        (x[:128], y[:128]),
        "transfer",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"validation_split": 0.0, "test_split": 0.0},
        model_options={"backbone": backbone, "fine_tune_layers": 8, "fine_tune_epochs": 2},
        train={
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "verbose": 0,
            "early_stopping": None,
        },
        export={"formats": []},
        report=NOEXPLAIN,
    )
    # Both phases ran in the one call: the head on the frozen backbone, then
    # the top 8 layers unfrozen (BatchNorm kept frozen) at a tenth of the rate.
    assert result.history["phase"] == [1.0, 2.0, 2.0]
    assert (
        "then fine-tuning the top 8 backbone layers at learning rate 0.0001" in result.stop_reason
    )
    # Each phase counts its own epochs (fine-tuning ran epochs 2 and 3: two of them).
    assert result.stop_reason.startswith("head (backbone frozen): completed all 1 epochs;")
    assert result.stop_reason.endswith(": completed all 2 epochs"), result.stop_reason
    model = result.model
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    assert fine_tune_plan("transfer", result.config.model_options).epochs == 2
    layers = model.get_layer("backbone").layers
    assert not any(
        layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert not any(layer.trainable for layer in layers[:-8])
    assert [layer.name for layer in layers[-8:] if layer.trainable_weights] == ["conv_1", "dense"]
    # conv_0 was frozen in both phases: untouched; conv_1 was fine-tuned.
    trained = model.get_layer("backbone")
    np.testing.assert_array_equal(trained.get_layer("conv_0").kernel.numpy(), before["conv_0"])
    assert not np.allclose(trained.get_layer("conv_1").kernel.numpy(), before["conv_1"])
    # The model passed as backbone is left as it was (the transfer model has a copy).
    assert all(layer.trainable for layer in backbone.layers)


@pytest.mark.slow
def test_transfer_from_digits_0_to_4_beats_scratch_on_few_examples_of_5_to_9(
    digits_arrays, tmp_path
):
    x, y = digits_arrays
    source = y < 5
    pretrained = kerastrain.fit_pipeline(
        (x[source], y[source]),
        "cnn",
        seed=0,
        output_dir=str(tmp_path / "pretrain"),
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 10, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    target = np.flatnonzero(~source)
    common = dict(
        data_options={"validation_split": 0.0, "test_split": 0.0},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    scores = []
    for draw in range(3):  # three draws of 2 labelled examples per class
        rng = np.random.default_rng(100 + draw)
        few = np.concatenate(
            [rng.choice(target[y[target] == c], 2, replace=False) for c in range(5, 10)]
        )
        unseen = np.setdiff1d(target, few)
        transferred = kerastrain.fit_pipeline(
            (x[few], y[few] - 5),
            "transfer",
            seed=draw,
            output_dir=str(tmp_path / f"transfer{draw}"),
            model_options={
                "backbone": pretrained.model,
                "backbone_output": "flatten",
                "dropout": 0.0,
                "fine_tune_layers": 20,
                "fine_tune_epochs": 10,
            },
            train={
                "epochs": 20,
                "batch_size": 5,
                "learning_rate": 0.01,
                "verbose": 0,
                "early_stopping": None,
            },
            **common,
        )
        assert transferred.history["phase"] == [1.0] * 20 + [2.0] * 10
        scratch = kerastrain.fit_pipeline(  # the same network, same 30 epochs, no pretraining
            (x[few], y[few] - 5),
            "cnn",
            seed=draw,
            output_dir=str(tmp_path / f"scratch{draw}"),
            model_options={"filters": 16, "dense": 64},
            train={
                "epochs": 30,
                "batch_size": 5,
                "learning_rate": 0.01,
                "verbose": 0,
                "early_stopping": None,
            },
            **common,
        )
        scores.append(
            [
                float(
                    np.mean(run.model.predict(x[unseen], verbose=0).argmax(axis=1) == y[unseen] - 5)
                )
                for run in (transferred, scratch)
            ]
        )
    scores = np.asarray(scores)
    print(
        f"digits 5-9 from 10 labelled examples, accuracy on the ~890 others "
        f"(transfer, scratch) per draw: {scores.round(3).tolist()}"
    )
    assert scores[:, 0].mean() > scores[:, 1].mean() + 0.02
    assert (scores[:, 0] > scores[:, 1]).sum() >= 2
