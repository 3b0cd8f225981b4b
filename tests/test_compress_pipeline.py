"""Compression through `fit_pipeline`: one call from data to small, verified
artifacts; the TFLite modes of the export; and a Mirrored strategy."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kerastrain._keras import keras, tf
from kerastrain.batching import predict_model
from kerastrain.compress.prune import tflite_weights
from kerastrain.config import ExportConfig, load_config
from kerastrain.data.prepare import prepare_data
from kerastrain.export import export_model, verify_artifacts
from kerastrain.pipeline import fit_pipeline
from kerastrain.training import run_training

#: Class names TF-MOT gives its wrappers; none may reach an exported file.
TFMOT_CLASSES = (
    "PruneLowMagnitude",
    "ClusterWeights",
    "QuantizeWrapper",
    "QuantizeAnnotate",
    "QuantizeLayer",
)


def section_rows(report: str, slug: str) -> list[list[str]]:
    """The table of one section of the HTML report, header row first."""
    match = re.search(rf'<section id="{slug}"[^>]*>(.*?)</section>', report, re.S)
    assert match, f"no section {slug!r} in the report"
    return [
        [html.unescape(cell) for cell in re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", match.group(1), re.S)
    ]


@pytest.mark.slow
def test_one_call_distills_prunes_clusters_quantizes_and_exports(breast_cancer_arrays, tmp_path):
    result = fit_pipeline(
        breast_cancer_arrays,
        "mlp",
        seed=0,
        output_dir=str(tmp_path),
        model_options={"width": 32},
        report={"explain": "none"},
        train={"epochs": 6, "verbose": 0, "early_stopping": None},
        compress={
            "distill": {"student": {"width": 16}, "epochs": 2},
            "prune": {"target_sparsity": 0.5, "epochs": 2},
            "cluster": {"clusters": 8, "epochs": 1},
            "quantize": "qat",
            "quantize_epochs": 1,
        },
        export={"tflite": "int8", "latency_runs": 20},
    )

    summary = json.loads((tmp_path / "compression.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["distill", "prune", "cluster", "qat"]
    assert summary["pruned_layers"] == ["dense_0", "dense_1"]
    # Prune- and cluster-preserving QAT: the zeros survive QAT (measured in
    # the QAT kernels), and each clustered kernel kept at most 8 values.
    assert all(v >= 0.495 for v in summary["sparsity"].values()), summary["sparsity"]
    assert summary["clustered_layers"] == ["dense_0", "dense_1"]
    assert all(n <= 8 for n in summary["unique_values"].values()), summary["unique_values"]
    (dense_1,) = [
        w for w in tflite_weights(result.artifacts["tflite_int8"]).values() if w.shape == (16, 16)
    ]  # its int8 kernel: zeros, <= 8 values per channel
    assert np.mean(dense_1 == 0) >= 0.495
    assert max(np.unique(row).size for row in dense_1) <= 8
    assert summary["unquantized_layers"] == ["normalize"]
    # The student (width 16) replaced the teacher (width 32).
    assert result.model.get_layer("quant_dense_0").layer.units == 16

    metrics, artifacts = result.metrics, result.artifacts
    assert set(artifacts) == {"savedmodel", "keras", "tflite_int8"}
    int8, base = metrics["tflite_int8"], metrics["uncompressed_tflite"]
    # A 4x smaller student after 2 epochs: well above the majority class (0.63).
    assert int8["agreement"] >= 0.98 and int8["accuracy"] > 0.85
    assert int8["gzip_bytes"] * 3 < base["gzip_bytes"]  # a tiny model: overhead dominates
    assert int8["latency_ms"] > 0 and base["latency_ms"] > 0 and "kernels" in int8
    # Every artifact reloads with no TF-MOT scope; the .keras file holds the
    # QAT model's float twin, with no TF-MOT class in it.
    with zipfile.ZipFile(artifacts["keras"]) as archive:
        config = archive.read("config.json").decode()
    assert not any(name in config for name in TFMOT_CLASSES)
    twin = keras.models.load_model(artifacts["keras"], compile=False)
    assert twin.get_layer("dense_0").units == 16

    report = result.report_path.read_text()
    header, *rows = section_rows(report, "compression")
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(table) == [
        "uncompressed float32 TFLite (baseline)",
        "savedmodel",
        "keras",
        "tflite_int8",
    ]
    assert table["tflite_int8"]["gzip bytes"] == str(int8["gzip_bytes"])
    assert float(table["tflite_int8"]["x smaller (gzip)"]) > 3
    # The student's parameters and FLOPs against the teacher's; latency of a
    # single example and of a batch call, for the baseline and the int8 file.
    baseline_row, int8_row = table["uncompressed float32 TFLite (baseline)"], table["tflite_int8"]
    assert int(baseline_row["params"]) == base["params"] == summary["baseline"]["params"]
    assert int(int8_row["params"]) == summary["params"] == twin.count_params()
    assert summary["params"] < base["params"] / 2 and summary["flops"] < base["flops"] / 2
    assert int(int8_row["FLOPs/example"]) == summary["flops"] > 0
    assert base["batch_latency_ms"] > 0 and int8["batch_latency_ms"] > 0
    assert base["batch_rows"] == int8["batch_rows"] == 64
    assert float(int8_row["batch latency ms"]) > 0
    header, *rows = section_rows(report, "compressed-layers")
    assert ["normalize", "n/a", "n/a", "no (left in float)"] in rows
    assert [row[0] for row in section_rows(report, "compression-steps")[1:]] == [
        "distill",
        "prune",
        "cluster",
        "qat",
    ]


@pytest.mark.slow
def test_every_tflite_mode_is_verified_and_timed(digits_arrays, tmp_path):
    config = load_config(
        None,
        data=digits_arrays,
        model="mlp",
        seed=0,
        model_options={"width": 128, "depth": 1},
        train={
            "epochs": 1,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32"},
        },
    )
    prepared = prepare_data(config.data, config.data_options, config.seed)
    model, _ = run_training(
        config.train,
        prepared,
        tf.distribute.get_strategy(),
        model_spec=config.model,
        model_options=config.model_options,
        batch_size=config.batch_size,
        seed=config.seed,
        distribute=config.distribute,
    )
    x, y = prepared.part("test")
    export = ExportConfig(
        formats=["tflite"], tflite=["float32", "float16", "dynamic", "int8"], int8_io=True
    )
    artifacts = export_model(model, tmp_path, export, representative=prepared.part("train")[0])
    assert artifacts.approximate == {"tflite_float16", "tflite_dynamic", "tflite_int8"}
    metrics = verify_artifacts(
        predict_model(model, x),
        artifacts,
        x,
        y,
        prepared.task,
        atol=1e-4,
        min_agreement=0.97,
        latency_runs=20,
    )

    sizes = {name: m["bytes"] for name, m in metrics.items()}
    assert sizes["tflite"] > sizes["tflite_float16"] > sizes["tflite_dynamic"]
    assert sizes["tflite_int8"] < 0.4 * sizes["tflite"]
    assert metrics["tflite"]["max_abs_diff"] <= 1e-4
    assert all(m["latency_ms"] > 0 for m in metrics.values())
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifacts["tflite_int8"]))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # integer only, int8 in and out
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from kerastrain.compress.common import Context
    from kerastrain.compress.plan import Plan, apply_plan, distill
    from kerastrain.config import load_config
    from kerastrain.data.prepare import prepare_data
    from kerastrain.training import run_training

    bunch = load_breast_cancer()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = load_config(
        None, data=(bunch.data.astype(np.float32), bunch.target), model="mlp", seed=0,
        model_options={"width": 32}, train={"epochs": 1, "verbose": 0, "early_stopping": None},
        compress={"distill": {"student": {"width": 16}, "epochs": 1},
                  "prune": {"target_sparsity": 0.5, "epochs": 1}})
    prepared = prepare_data(config.data, config.data_options, config.seed)
    trained, _ = run_training(
        config.train, prepared, strategy, model_spec=config.model,
        model_options=config.model_options, batch_size=config.batch_size, seed=config.seed)
    ctx = Context.create(config, prepared, strategy)
    student, _ = distill(trained, config.compress.distill, ctx)
    result = apply_plan(student, Plan(prune=config.compress.prune), ctx)
    outputs = result.model.predict(prepared.part("test")[0], verbose=0)
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync, "sparsity": result.sparsity,
        "units": result.model.get_layer("dense_0").units,
        "probabilities": bool(np.all((outputs >= 0) & (outputs <= 1))),
        "steps": [s.name for s in result.steps],
        "mirrored": type(result.model.get_layer("dense_0").kernel).__name__}))
""")


@pytest.mark.subprocess
def test_compression_under_a_mirrored_strategy_of_two_cpus(tmp_path):
    """The logical CPUs must exist before TensorFlow starts: its own process."""
    # TF_USE_LEGACY_KERAS=1 (TF-MOT sets it anyway) lets TensorFlow skip
    # importing Keras 3: a faster start.
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["replicas"] == 2
    # The distiller's loss is scaled per replica; the student was pruned with
    # wrappers built inside the strategy's scope (its variables are mirrored).
    assert result["steps"] == ["prune"] and result["units"] == 16
    assert result["mirrored"] == "MirroredVariable"
    assert set(result["sparsity"]) == {"dense_0", "dense_1"}
    assert all(v >= 0.495 for v in result["sparsity"].values()), result["sparsity"]
    assert result["probabilities"]
