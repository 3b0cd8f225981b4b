"""Experiment tracking options: ``fit_pipeline(tracking={...})``."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import ClassVar

from kerastrain.config.base import Section
from kerastrain.errors import ConfigError

MLFLOW_INSTALL = "pip install 'kerastrain[mlflow]'"


@dataclasses.dataclass
class TrackingConfig(Section):
    """Where a run's numbers go besides the run folder.

    Attributes:
        tensorboard: Write TensorBoard logs to `<run folder>/tensorboard`:
            the training scalars (loss, metrics, learning rate) every epoch
            and the final metrics of each split and artifact.
            Defaults to `False`.
        mlflow: Log the run to MLflow: the config as params, the history and
            final metrics as metrics, the run folder (report, model card,
            artifacts) as artifacts. Needs the `mlflow` extra
            (`pip install 'kerastrain[mlflow]'`). Defaults to `False`.
        mlflow_tracking_uri: The MLflow store, e.g. `"sqlite:///mlflow.db"`
            or `"http://host:5000"`. Defaults to `None` (MLflow's own default).
        mlflow_experiment: The MLflow experiment, created when missing.
            Defaults to `"kerastrain"`.
        mlflow_artifact_location: Where a newly created experiment stores its
            artifacts. Defaults to `None` (MLflow's default, relative to the
            working directory for local stores).
    """

    _path: ClassVar[str] = "tracking"

    tensorboard: bool = False
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "kerastrain"
    mlflow_artifact_location: str | None = None

    def validate(self) -> None:
        if not self.mlflow:
            for key in ("mlflow_tracking_uri", "mlflow_artifact_location"):
                if getattr(self, key) is not None:
                    raise ConfigError(
                        f"The 'tracking.{key}' option is set but tracking.mlflow is False, so "
                        "nothing would be logged there. Set tracking.mlflow=True, or remove "
                        f"tracking.{key}."
                    )
        elif importlib.util.find_spec("mlflow") is None:
            raise ConfigError(
                "The 'tracking.mlflow' option needs MLflow, which is not installed. "
                f"Install it with: {MLFLOW_INSTALL}."
            )
        if not self.mlflow_experiment:
            raise ConfigError(
                "The 'tracking.mlflow_experiment' option must be a non-empty "
                "string. Received: tracking.mlflow_experiment=''."
            )
