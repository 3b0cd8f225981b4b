"""Each compression technique on real data (scikit-learn digits, a small CNN):
pruning, 2:4, quantization-aware training, prune-preserving QAT, clustering.

One CNN is trained once for the module; every test compresses a copy, so
the techniques are checked on the same trained weights.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.batching import predict_model
from kerastrain.compress import compress_model
from kerastrain.compress import prune as prune_mod
from kerastrain.compress.cluster import unique_values
from kerastrain.compress.common import Context
from kerastrain.compress.plan import Plan, apply_plan
from kerastrain.compress.quantize import fuse_activations, quantize
from kerastrain.compress.quantize import strip as strip_qat
from kerastrain.config import CompressConfig, ExportConfig, load_config
from kerastrain.config.compress import ClusterConfig, PruneConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.errors import ConfigError
from kerastrain.export import (
    convert_to_tflite,
    export_model,
    load_predictor,
    tflite_latency,
    verify_artifacts,
)
from kerastrain.metrics import agreement
from kerastrain.models.base import output_layer
from kerastrain.training import run_training

#: Kernel sizes of the module's CNN (filters 8, dense 32, on 8x8 digits).
KERNEL_SIZES = {"conv_0": 72, "conv_1": 1152, "dense": 2048, "output": 320}


@dataclasses.dataclass
class Trained:
    model: keras.Model
    ctx: Context
    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    accuracy: float


@pytest.fixture(scope="module")
def trained(digits_arrays) -> Trained:
    keras.utils.set_random_seed(0)
    config = load_config(
        None,
        data=digits_arrays,
        model="cnn",
        seed=0,
        compress={},
        data_options={"validation_split": 0.0, "batch_size": 64},
        model_options={"filters": 8, "dense": 32, "dropout": 0.0},
        train={"epochs": 10, "learning_rate": 5e-3, "verbose": 0, "early_stopping": None},
    )
    prepared = prepare_data(config.data, config.data_options, config.seed)
    strategy = tf.distribute.get_strategy()
    model, _ = run_training(
        config.train,
        prepared,
        strategy,
        model_spec=config.model,
        model_options=config.model_options,
        batch_size=config.batch_size,
        seed=config.seed,
        distribute=config.distribute,
    )
    x_test, y_test = prepared.part("test")
    accuracy = float(np.mean(predict_model(model, x_test).argmax(1) == y_test))
    assert accuracy > 0.9, "the base CNN must be worth compressing"
    return Trained(
        model,
        Context.create(config, prepared, strategy),
        x_test,
        y_test,
        prepared.part("train")[0],
        accuracy,
    )


@pytest.fixture(scope="module")
def pruned(trained):
    """The module's CNN pruned to 75% (default layers), stripped."""
    return apply_plan(
        trained.model, Plan(prune=PruneConfig(target_sparsity=0.75, epochs=2)), trained.ctx
    )


def _tflite_kernel(path, layer: str) -> np.ndarray:
    """A layer's kernel as stored in a TFLite file, found by its size."""
    (values,) = [
        v for v in prune_mod.tflite_weights(path).values() if v.size == KERNEL_SIZES[layer]
    ]
    return values


def _accuracy(model: keras.Model, t: Trained) -> float:
    return float(np.mean(predict_model(model, t.x_test).argmax(1) == t.y_test))


@pytest.mark.slow
def test_pruning_reaches_the_target_in_stripped_and_exported_weights(trained, pruned, tmp_path):
    result = pruned
    # The first conv and the classifier are skipped by default.
    assert result.pruned_layers == ["conv_1", "dense"]
    assert all(v >= 0.745 for v in result.sparsity.values()), result.sparsity
    stripped = result.model
    assert not any("prune" in type(layer).__name__.lower() for layer in stripped.layers)
    measured = prune_mod.sparsity_by_layer(stripped)
    assert measured["conv_0"] < 0.05 and measured["output"] < 0.05
    assert _accuracy(stripped, trained) >= trained.accuracy - 0.05

    artifacts = export_model(stripped, tmp_path, ExportConfig(tflite="dynamic"))
    saved = prune_mod.savedmodel_sparsity(artifacts["savedmodel"])
    assert saved["conv_1/kernel:0"] >= 0.745 and saved["dense/kernel:0"] >= 0.745
    for layer in ("conv_1", "dense"):  # int8 weights, read back from the file
        kernel = _tflite_kernel(artifacts["tflite_dynamic"], layer)
        assert kernel.dtype == np.int8 and prune_mod.weight_sparsity(kernel) >= 0.745
    # The exported .keras file reloads with no TF-MOT scope and predicts the same.
    reloaded = keras.models.load_model(artifacts["keras"], compile=False)
    np.testing.assert_allclose(
        reloaded.predict(trained.x_test, verbose=0),
        predict_model(stripped, trained.x_test),
        atol=1e-5,
    )


@pytest.mark.slow
def test_structured_2_by_4_pruning_keeps_its_pattern_through_int8(trained, tmp_path):
    result = apply_plan(
        trained.model, Plan(prune=PruneConfig(structure="2:4", epochs=1)), trained.ctx
    )

    for name in ("conv_1", "dense"):
        kernel = result.model.get_layer(name).kernel.numpy()
        assert prune_mod.is_2_by_4(kernel), name
        assert result.sparsity[name] == pytest.approx(0.5, abs=0.01)
    assert not prune_mod.is_2_by_4(result.model.get_layer("output").kernel.numpy())
    artifacts = export_model(
        result.model, tmp_path, ExportConfig(formats=["tflite"], tflite="dynamic")
    )
    conv = _tflite_kernel(artifacts["tflite_dynamic"], "conv_1")  # (out, h, w, in), int8
    dense = _tflite_kernel(artifacts["tflite_dynamic"], "dense")  # (out, in)
    assert prune_mod.is_2_by_4(np.transpose(conv, (1, 2, 3, 0)))
    assert prune_mod.is_2_by_4(dense.T)


def test_schedule_reaches_the_target_on_a_mask_update_step():
    config = PruneConfig(target_sparsity=0.8, epochs=3)
    schedule = prune_mod.make_schedule(config, steps_per_epoch=37)
    end, frequency = schedule.end_step, schedule.frequency
    assert end % frequency == 0 and end <= 2 * 37  # ramp over half the epochs, rounded up
    should_prune, sparsity = schedule(tf.constant(end, tf.int64))
    assert bool(should_prune) and float(sparsity) == pytest.approx(0.8)


def test_layer_selection_names_what_is_wrong(trained):
    model = trained.model
    with pytest.raises(ConfigError, match=r"compress.prune.skip.*'dens'.*Did you mean 'dense'"):
        prune_mod.prunable_layers(model, PruneConfig(skip=["dens"]))
    with pytest.raises(ConfigError, match=r"'normalize' \(Normalization\), which cannot be pruned"):
        prune_mod.prunable_layers(model, PruneConfig(layers=["normalize"]))
    with pytest.raises(ConfigError, match="No layer is left to be pruned"):
        prune_mod.prunable_layers(model, PruneConfig(skip=["conv_1", "dense"]))
    assert prune_mod.prunable_layers(
        model, PruneConfig(skip_output=False, skip_first_conv=False)
    ) == ["conv_0", "conv_1", "dense", "output"]


def test_a_bad_layer_name_fails_before_any_compression_training(trained):
    config = trained.ctx.config.replace(
        compress=CompressConfig(
            prune=PruneConfig(target_sparsity=0.5),
            cluster=ClusterConfig(layers=["dense", "outptu"]),
        )
    )
    start = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"compress.cluster.layers.*'outptu'.*Did you mean "
        r"'output'",
    ):
        compress_model(trained.model, trained.ctx.prepared, config, trained.ctx.strategy)
    assert time.perf_counter() - start < 5  # no baseline conversion, no pruning fine-tuning


def test_pruning_callbacks_always_update_the_step(tmp_path):
    from kerastrain.compress.common import tfmot

    sparsity = tfmot().sparsity.keras
    kinds = [type(c) for c in prune_mod.pruning_callbacks(tmp_path)]
    assert kinds == [sparsity.UpdatePruningStep, sparsity.PruningSummaries]
    assert [type(c) for c in prune_mod.pruning_callbacks()] == [sparsity.UpdatePruningStep]


def test_fusing_relu_into_the_layer_changes_no_output(trained):
    fused = fuse_activations(trained.model)
    assert fused.get_layer("conv_0").activation.__name__ == "relu"
    assert fused.get_layer("act_0").activation.__name__ == "linear"
    np.testing.assert_allclose(
        predict_model(fused, trained.x_test),
        predict_model(trained.model, trained.x_test),
        atol=1e-6,
    )


@pytest.mark.slow
def test_prune_preserving_qat_converts_to_int8_that_agrees_and_stays_sparse(
    trained, pruned, tmp_path
):
    """QAT after pruning: the prune-preserving scheme, int8 agreement with
    Keras, the zeros kept through QAT and into the int8 file, and every
    artifact reloading with no TF-MOT scope."""
    qat, unquantized = quantize(pruned.model, preserve="sparsity")
    trained.ctx.fit(qat, epochs=1, learning_rate=3e-3)

    assert unquantized == ["normalize"]  # the input standardization stays float
    # Measured in the quantization-aware kernels after QAT training. Without
    # the ReLU fusion, conv_1 fell from 0.75 to 0.005 here.
    after = prune_mod.sparsity_by_layer(qat, ["conv_1", "dense"])
    assert all(v >= 0.745 for v in after.values()), after
    float_model = strip_qat(qat, pruned.model)
    artifacts = export_model(
        qat,
        tmp_path,
        ExportConfig(tflite="int8"),
        representative=trained.x_train,
        float_model=float_model,
    )
    assert artifacts.approximate == {"tflite_int8"}
    assert artifacts.sources == {"keras": float_model}  # checked against itself, to atol
    metrics = verify_artifacts(
        predict_model(qat, trained.x_test),
        artifacts,
        trained.x_test,
        trained.y_test,
        trained.ctx.prepared.task,
        atol=1e-4,
        min_agreement=0.97,
    )
    assert metrics["tflite_int8"]["agreement"] >= 0.99
    assert metrics["savedmodel"]["max_abs_diff"] <= 1e-4  # tf.saved_model.load, no scope
    assert metrics["keras"]["max_abs_diff"] <= 1e-4  # the float twin, reloaded, no scope
    assert metrics["keras"]["accuracy"] >= trained.accuracy - 0.05
    for layer in ("conv_1", "dense"):
        assert prune_mod.weight_sparsity(_tflite_kernel(artifacts["tflite_int8"], layer)) >= 0.745
    assert metrics["tflite_int8"]["gzip_bytes"] * 4 < metrics["savedmodel"]["gzip_bytes"]


class Halve(keras.layers.Layer):
    """A layer TF-MOT has no quantize config for."""

    def call(self, inputs):
        return inputs * 0.5


def halving_mlp(inputs, head):
    """A digits MLP with a layer TF-MOT cannot quantize in the middle."""
    x = keras.layers.Flatten(name="flatten")(inputs.features)
    x = keras.layers.Dense(64, activation="relu", name="dense_0")(x)
    x = Halve(name="halve")(x)
    return keras.Model(inputs.inputs, output_layer(head)(x), name="halving_mlp")


@pytest.mark.slow
def test_qat_leaves_unquantizable_layers_float_lists_them_and_agrees_in_int8(digits_arrays):
    config = load_config(
        None,
        data=digits_arrays,
        model=halving_mlp,
        seed=0,
        compress={},
        data_options={"validation_split": 0.0},
        train={
            "epochs": 4,
            "learning_rate": 3e-3,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32"},
        },
    )
    prepared = prepare_data(config.data, config.data_options, config.seed)
    ctx = Context.create(config, prepared, tf.distribute.get_strategy())
    model, _ = run_training(
        config.train,
        prepared,
        ctx.strategy,
        model_spec=config.model,
        model_options=config.model_options,
        batch_size=config.batch_size,
        seed=config.seed,
        distribute=config.distribute,
    )

    result = apply_plan(model, Plan(quantize="qat", quantize_epochs=1), ctx)
    assert result.unquantized == ["normalize", "halve"]  # listed, not a crash
    x, y = prepared.part("test")
    content = convert_to_tflite(result.model, "int8", representative=prepared.part("train")[0])
    path = Path(tempfile.mkdtemp()) / "qat.tflite"
    path.write_bytes(content)
    outputs = load_predictor(path)(x)
    assert agreement(prepared.task, outputs, predict_model(result.model, x)) >= 0.99


def test_xnnpack_refusing_a_sparse_model_falls_back_to_the_builtin_kernels(
    trained, pruned, tmp_path, caplog
):
    """TFLite's sparse weight encoding: XNNPACK fails to prepare it here."""
    export_model(pruned.model, tmp_path, ExportConfig(formats=["savedmodel"]))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "savedmodel"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = tmp_path / "sparse.tflite"
    path.write_bytes(converter.convert())
    with caplog.at_level("WARNING", logger="kerastrain.export"):
        outputs = load_predictor(path)(trained.x_test)
        timing = tflite_latency(path, trained.x_test, runs=5)
    assert "using the built-in kernels" in caplog.text
    assert timing["kernels"].startswith("built-in kernels")
    assert (
        agreement(trained.ctx.prepared.task, outputs, predict_model(pruned.model, trained.x_test))
        >= 0.97
    )


@pytest.mark.slow
def test_clustering_leaves_at_most_n_values_per_kernel(trained, tmp_path):
    config = ClusterConfig(clusters=8, epochs=1)
    result = apply_plan(trained.model, Plan(cluster=config), trained.ctx)

    assert result.clustered_layers == ["conv_1", "dense"]
    assert result.unique_values == unique_values(result.model, ["conv_1", "dense"])
    assert all(1 < n <= 8 for n in result.unique_values.values()), result.unique_values
    assert not any("cluster" in type(layer).__name__.lower() for layer in result.model.layers)
    assert _accuracy(result.model, trained) >= trained.accuracy - 0.05
    artifacts = export_model(
        result.model, tmp_path, ExportConfig(formats=["tflite"], tflite="dynamic")
    )
    conv = _tflite_kernel(artifacts["tflite_dynamic"], "conv_1")
    # int8 scales each output channel on its own: at most 8 values per channel.
    assert max(np.unique(channel).size for channel in conv) <= 8
