"""The compress and export options: checked when built, before any training."""

from __future__ import annotations

import pytest

from kerastrain.config import CompressConfig, ExportConfig, load_config
from kerastrain.config.compress import BudgetConfig, ClusterConfig, DistillConfig, PruneConfig
from kerastrain.errors import ConfigError


def test_defaults_follow_the_contract():
    config = CompressConfig.from_dict(
        {"prune": {}, "quantize": "qat", "cluster": {}, "distill": {"student": {"width": 16}}}
    )
    assert config.prune.target_sparsity == 0.8 and config.prune.schedule == "polynomial"
    assert config.prune.structure is None and config.prune.skip_first_conv
    assert config.prune.skip_output and config.prune.ramp_epochs == 1
    assert config.cluster.clusters == 16 and config.cluster.init == "kmeans++"
    assert config.distill.student == {"width": 16}
    assert (config.distill.temperature, config.distill.alpha) == (4.0, 0.5)
    assert load_config(None).compress is None


def test_2_by_4_prunes_exactly_half():
    assert PruneConfig(structure="2:4").target_sparsity == 0.5
    with pytest.raises(ConfigError, match=r"compress.prune.target_sparsity.*0.5.*2:4"):
        PruneConfig(structure="2:4", target_sparsity=0.8)


@pytest.mark.parametrize(
    "section, value, message",
    [
        ({"prune": {"target_sparsity": 1.0}}, None, r"compress.prune.target_sparsity.*< 1"),
        ({"prune": {"schedule": "polynomal"}}, None, r"Did you mean 'polynomial'"),
        ({"prune": {"structure": "4:8"}}, None, r"compress.prune.structure.*'2:4'"),
        ({"prune": {"epochs": 2, "end_epoch": 3}}, None, r"compress.prune.end_epoch.*<= .*\(2\)"),
        ({"prune": {"initial_sparsity": 0.9, "target_sparsity": 0.5}}, None, r"initial_sparsity"),
        ({"prune": {"sparsity": 0.5}}, None, r"Unknown option 'compress.prune.sparsity'"),
        ({"quantize": "int8"}, None, r"compress.quantize.*'qat'"),
        ({"cluster": {"clusters": 1}}, None, r"compress.cluster.clusters.*>= 2"),
        ({"cluster": {"init": "kmeans"}}, None, r"Did you mean 'kmeans\+\+'"),
        ({"distill": {"alpha": 1.5}}, None, r"compress.distill.alpha.*<= 1"),
        ({"budget": {}}, None, r"compress.budget.max_kb"),
        ({"budget": {"max_kb": 8, "sparsities": [0.5, 1.2]}}, None, r"sparsities\[1\]"),
        ({"budget": {"max_kb": 8}, "prune": {}}, None, r"budget chooses the techniques"),
        ({"prune": True}, None, r"'compress.prune' option must be a mapping of PruneConfig"),
    ],
)
def test_bad_compress_options_are_refused_by_name(section, value, message):
    with pytest.raises(ConfigError, match=message):
        CompressConfig.from_dict(section)


def test_export_modes_and_their_checks():
    config = ExportConfig(tflite=["float32", "int8"], int8_io=True)
    assert config.tflite_modes == ["float32", "int8"]
    assert ExportConfig().tflite_modes == ["float32"]
    with pytest.raises(ConfigError, match=r"Did you mean 'float16'"):
        ExportConfig(tflite="float61")
    with pytest.raises(ConfigError, match=r"export.tflite.*without repeats"):
        ExportConfig(tflite=["int8", "int8"])
    with pytest.raises(ConfigError, match=r"export.int8_io.*'int8'"):
        ExportConfig(tflite="dynamic", int8_io=True)
    with pytest.raises(ConfigError, match=r"export.min_agreement"):
        ExportConfig(min_agreement=0.0)


def test_a_budget_needs_a_tflite_file_to_measure():
    with pytest.raises(ConfigError, match=r"export.formats.*'tflite'.*compress.budget"):
        load_config(None, compress={"budget": {"max_kb": 8}}, export={"formats": ["keras"]})


def test_compress_merges_key_by_key_like_the_other_sections(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("compress:\n  prune: {target_sparsity: 0.5}\n  quantize: qat\n")
    config = load_config(path, compress={"cluster": {"clusters": 8}})
    assert config.compress.prune.target_sparsity == 0.5 and config.compress.quantize == "qat"
    # Inside a section, None is a value: it turns a technique off.
    assert load_config(path, compress={"quantize": None}).compress.quantize is None
    assert config.compress.cluster.clusters == 8
    assert isinstance(config.compress.cluster, ClusterConfig)
    assert BudgetConfig(max_kb=8).max_accuracy_drop == 0.01
    assert DistillConfig().teacher is None
