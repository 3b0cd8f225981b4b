"""Cluster job files for a config: ``kerastrain launch --emit slurm|tfjob CONFIG``.

The same config that `kerastrain launch` tries on local processes becomes a
job for a real cluster, one ``kerastrain run`` per task:

- ``slurm``: an sbatch script; each `srun` task trains as a worker of
  `strategy="multi_worker"` with `distribute.cluster="slurm"` (the cluster
  comes from the step's ``SLURM_*`` variables through TensorFlow's
  `SlurmClusterResolver`; Slurm does not set ``TF_CONFIG``);
- ``tfjob``: a Kubeflow TFJob manifest (with a ConfigMap holding the
  config); the training operator sets each worker's ``TF_CONFIG``.

The config is resolved once, as the local launcher does (`strategy`, `seed`,
`name`, `output_dir`), so every task runs the same run; the file is written
atomically. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from kerastrain.config import DistributeConfig, PipelineConfig
from kerastrain.errors import ConfigError, config_error, message, one_of
from kerastrain.files import atomic_write

# The local launcher's resolution of a config (strategy, seed, name, folder):
# the emitted job must run what `kerastrain launch` would.
from kerastrain.launch import _launch_config

__all__ = ["emit_job", "slurm_script", "tfjob_manifest", "EMIT_KINDS"]

EMIT_KINDS = ("slurm", "tfjob")
#: The TFJob operator looks for the container of this name.
TFJOB_CONTAINER = "tensorflow"
CONFIG_MOUNT = "/etc/kerastrain"


def _job_config(config: Any, kind: str) -> PipelineConfig:
    cfg = _launch_config(config, ps=0)
    if not isinstance(cfg.data, (str, os.PathLike)):
        raise ConfigError(
            message(
                "A cluster job reads its data itself; in-memory data cannot be written into "
                "the job file",
                received={"data": type(cfg.data).__name__},
                allowed="Give data as a file, folder, 'tfds:NAME' or a built-in name",
            )
        )
    cluster = "slurm" if kind == "slurm" else "tf_config"
    return dataclasses.replace(
        cfg, distribute=dataclasses.replace(cfg.distribute or DistributeConfig(), cluster=cluster)
    )


def _yaml(cfg: PipelineConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _k8s_name(name: str) -> str:
    """A Kubernetes object name (lower-case letters, digits and '-')."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "kerastrain"


def slurm_script(cfg: PipelineConfig, workers: int, gpus: int = 0) -> str:
    """The sbatch script that trains ``cfg`` with ``workers`` tasks, one per node.

    Args:
        cfg: A resolved config (`distribute.cluster="slurm"`).
        workers: Tasks (one worker each).
        gpus: GPUs per task. Defaults to `0`.
    """
    gpu_line = f"#SBATCH --gpus-per-task={gpus}\n" if gpus else ""
    return (
        "#!/bin/bash\n"
        f"# Written by `kerastrain launch --emit slurm`: {workers} worker(s), one task per\n"
        "# node, each running `kerastrain run` on the config below. Submit with sbatch.\n"
        f"#SBATCH --job-name={cfg.name}\n"
        f"#SBATCH --nodes={workers}\n"
        f"#SBATCH --ntasks={workers}\n"
        "#SBATCH --ntasks-per-node=1\n"
        f"{gpu_line}"
        f"#SBATCH --output={cfg.name}-%j.out\n"
        "set -euo pipefail\n"
        "export TF_USE_LEGACY_KERAS=1\n"
        "# Every task reads the same file: the submit folder must be shared by the nodes,\n"
        "# as must output_dir.\n"
        f'CONFIG="${{SLURM_SUBMIT_DIR:-$PWD}}/{cfg.name}-${{SLURM_JOB_ID}}.yaml"\n'
        "cat > \"$CONFIG\" <<'KERASTRAIN_CONFIG'\n"
        f"{_yaml(cfg)}"
        "KERASTRAIN_CONFIG\n"
        f'srun --ntasks={workers} kerastrain run "$CONFIG"\n'
    )


def tfjob_manifest(cfg: PipelineConfig, workers: int, gpus: int = 0, image: str = "") -> str:
    """A ConfigMap with the config and the TFJob that trains it.

    Args:
        cfg: A resolved config (`distribute.cluster="tf_config"`).
        workers: Worker replicas.
        gpus: GPUs per worker. Defaults to `0`.
        image: A container image with kerastrain installed.
    """
    name = _k8s_name(cfg.name or "kerastrain")
    container: dict[str, Any] = {
        "name": TFJOB_CONTAINER,
        "image": image,
        "command": ["kerastrain", "run", f"{CONFIG_MOUNT}/config.yaml"],
        "env": [{"name": "TF_USE_LEGACY_KERAS", "value": "1"}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT}],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config"},
        "data": {"config.yaml": _yaml(cfg)},
    }
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": name},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None"},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "spec": {
                            "containers": [container],
                            "volumes": [
                                {"name": "config", "configMap": {"name": f"{name}-config"}}
                            ],
                        }
                    },
                }
            },
        },
    }
    header = (
        f"# Written by `kerastrain launch --emit tfjob`: {workers} worker(s), each running\n"
        "# `kerastrain run` on the ConfigMap's config; the TFJob operator sets TF_CONFIG.\n"
        "# output_dir must be a volume every worker reaches. Apply with kubectl apply -f.\n"
    )
    return header + yaml.safe_dump_all([config_map, job], sort_keys=False)


def emit_job(
    config: Any,
    kind: str,
    *,
    workers: int = 2,
    gpus: int = 0,
    output: str | os.PathLike | None = None,
    image: str = "kerastrain:latest",
) -> Path:
    """Writes the cluster job file for ``config`` and returns its path.

    Args:
        config: A `PipelineConfig`, a mapping, or a YAML path. Its strategy
            must be `"auto"` or `"multi_worker"`; its data must be a file,
            folder or name the tasks can read.
        kind: `"slurm"` (an sbatch script) or `"tfjob"` (a Kubeflow TFJob
            manifest).
        workers: Worker tasks. Defaults to `2`.
        gpus: GPUs per worker. Defaults to `0`.
        output: The file to write. Defaults to `<run name>.sbatch` or
            `<run name>.tfjob.yaml` in the current folder.
        image: The TFJob's container image (one with kerastrain installed).
            Defaults to `"kerastrain:latest"`.

    Returns:
        The written file (an sbatch script is made executable).

    Raises:
        ConfigError: For an unknown kind, a bad count, a strategy other than
            multi-worker, or in-memory data; nothing is written.
    """
    if kind not in EMIT_KINDS:
        raise config_error("emit", kind, one_of(EMIT_KINDS), EMIT_KINDS)
    for option, value, least in (("workers", workers, 1), ("gpus", gpus, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise config_error(option, value, f"an integer >= {least}")
    cfg = _job_config(config, kind)
    if kind == "slurm":
        text = slurm_script(cfg, workers, gpus)
        path = Path(output or f"{cfg.name}.sbatch")
    else:
        text = tfjob_manifest(cfg, workers, gpus, image)
        path = Path(output or f"{cfg.name}.tfjob.yaml")
    atomic_write(path, text)
    if kind == "slurm":
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
