"""The whole run's configuration, and loading it from YAML or a mapping."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml

from kerastrain.config.base import Section
from kerastrain.config.compress import CompressConfig
from kerastrain.config.data import DataConfig
from kerastrain.config.distribute import (
    PIPELINE_REFUSAL,
    STRATEGIES,
    DistributeConfig,
    check_strategy_spec,
)
from kerastrain.config.evaluate import EvaluateConfig
from kerastrain.config.export import ExportConfig
from kerastrain.config.report import ReportConfig
from kerastrain.config.tracking import TrackingConfig
from kerastrain.config.train import TrainConfig, resolve_schedule
from kerastrain.config.tune import TuneConfig
from kerastrain.errors import ConfigError, config_error, did_you_mean, message
from kerastrain.files import atomic_write

DEFAULT_BATCH_SIZE = 32


def _is_strategy(value: Any) -> bool:
    # Duck-typed so that this module never imports TensorFlow.
    return hasattr(value, "scope") and hasattr(value, "num_replicas_in_sync")


@dataclasses.dataclass
class PipelineConfig(Section):
    """Everything `fit_pipeline` needs; the same keys as its arguments.

    Attributes:
        data: The data: `"digits"` (embedded default), `(x, y)` arrays, a
            DataFrame or CSV path (name its label column in
            `data_options.target`), a folder of class sub-folders of images,
            `"tfds:NAME"`, or a `tf.data.Dataset` of `(x, y)`.
            Defaults to `"digits"`.
        model: A registered factory name (`"auto"`, `"mlp"`, `"cnn"`,
            `"resnet"`, `"transfer"`), a
            callable returning a tf_keras model, or a built tf_keras model.
            Defaults to `"auto"`.
        data_options: See `DataConfig`.
        train: See `TrainConfig`.
        compress: See `CompressConfig`; `None` compresses nothing.
            Defaults to `None`.
        export: See `ExportConfig`.
        evaluate: See `EvaluateConfig` (the binary decision threshold).
        tune: See `TuneConfig`; `None` trains with the options as given.
            Defaults to `None`.
        report: See `ReportConfig`.
        tracking: See `TrackingConfig`.
        strategy: A strategy name, a `tf.distribute.Strategy`, or a
            strategy by kind and options (``{"kind": "mirrored", "devices":
            [...]}``, see `STRATEGY_KINDS`; config.yaml records a strategy
            object this way). Defaults to `"auto"`.
        distribute: See `DistributeConfig`.
        model_options: Keyword arguments of the model factory (`width`,
            `depth`, `dropout`, ...). Defaults to `{}`.
        output_dir: The run folder. Defaults to `saved_models/<run name>`.
        overwrite: Replace a finished run in `output_dir`. Defaults to `False`.
        seed: Seed of every random choice (splits, shuffling, initializers).
            Defaults to `None`: a seed is drawn and recorded in the saved
            config so that the run can be repeated.
        name: The run's name. Defaults to `None`: `<model>-<timestamp>`.
    """

    _path: ClassVar[str] = ""

    data: Any = "digits"
    model: Any = "auto"
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_options: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    compress: CompressConfig | None = None
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    tune: TuneConfig | None = None
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    strategy: Any = "auto"
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    output_dir: str | None = None
    overwrite: bool = False
    seed: int | None = None
    name: str | None = None

    def validate(self) -> None:
        if isinstance(self.strategy, str):
            if self.strategy == "pipeline":
                raise ConfigError(message(PIPELINE_REFUSAL, received={"strategy": "pipeline"}))
            if self.strategy not in STRATEGIES:
                raise config_error(
                    "strategy",
                    self.strategy,
                    "one of " + ", ".join(map(repr, STRATEGIES)) + " or a tf.distribute.Strategy",
                    STRATEGIES,
                )
        elif isinstance(self.strategy, Mapping):
            object.__setattr__(self, "strategy", check_strategy_spec(self.strategy))
        elif not _is_strategy(self.strategy):
            raise config_error(
                "strategy",
                self.strategy,
                "a strategy name, a tf.distribute.Strategy, or a mapping with its 'kind'",
            )
        if not (isinstance(self.model, str) or callable(self.model)):
            raise config_error(
                "model",
                self.model,
                "a factory name, a callable returning a tf_keras model, or a tf_keras model",
            )
        # One batch size, wherever it was given.
        data_bs, train_bs = self.data_options.batch_size, self.train.batch_size
        if data_bs is not None and train_bs is not None and data_bs != train_bs:
            raise ConfigError(
                "Two batch sizes were given: data_options.batch_size="
                f"{data_bs} and train.batch_size={train_bs}. Set one of them."
            )
        # New sections: the ones given may be the caller's own objects.
        batch_size = train_bs or data_bs or DEFAULT_BATCH_SIZE
        if train_bs != batch_size:
            object.__setattr__(self, "train", self.train.replace(batch_size=batch_size))
        if data_bs != batch_size:
            object.__setattr__(
                self, "data_options", self.data_options.replace(batch_size=batch_size)
            )
        # schedule="auto": the resolved config names the schedule trained with.
        object.__setattr__(self, "train", resolve_schedule(self.train))
        if self.tune is not None:
            self.tune.check_train(self.train)
        self._check_model_parallel()
        if self.compress is not None and self.strategy_kind == "parameter_server":
            raise ConfigError(
                "compress is not available with strategy='parameter_server': "
                "TF-MOT's wrappers fine-tune through model.fit on the workers' "
                "replicas, which a parameter-server coordinator does not run. Use "
                "'multi_worker' or 'mirrored', or compress in a separate run."
            )
        if (
            self.compress is not None
            and self.compress.budget is not None
            and "tflite" not in self.export.formats
        ):
            raise config_error(
                "export.formats",
                self.export.formats,
                "a list that includes 'tflite' when compress.budget is set (the "
                "budget is the size of the TFLite file)",
            )

    def _check_model_parallel(self) -> None:
        """The mesh options belong to `strategy="model_parallel"`, which
        trains one model (no tuning search over many)."""
        given = [k for k in ("mesh", "layouts") if getattr(self.distribute, k) is not None]
        if self.strategy_kind != "model_parallel":
            if given:
                raise config_error(
                    f"distribute.{given[0]}",
                    getattr(self.distribute, given[0]),
                    "None unless strategy='model_parallel' (only it lays weights on a mesh)",
                )
            return
        if self.tune is not None:
            raise ConfigError(
                message(
                    "tune is not available with strategy='model_parallel': each trial would "
                    "build a sharded model, which the tuner's trials do not do",
                    received={"strategy": "model_parallel"},
                    allowed="Tune on one device (or 'mirrored') with a smaller model, then "
                    "train the chosen configuration with strategy='model_parallel'",
                )
            )
        train, execution = self.train, self.train.execution
        unsupported = {
            "train.learning_rate": (train.learning_rate, train.learning_rate == "find"),
            "train.gradient_accumulation": (
                train.gradient_accumulation,
                train.gradient_accumulation != 1,
            ),
            "train.ema": (train.ema, train.ema is not None),
            "train.execution.mixed_precision": (
                execution.mixed_precision,
                execution.mixed_precision not in ("auto", "float32"),
            ),
            "train.execution.jit_compile": (execution.jit_compile, execution.jit_compile is True),
            "train.execution.steps_per_execution": (
                execution.steps_per_execution,
                execution.steps_per_execution not in ("auto", 1),
            ),
        }
        for name, (value, refused) in unsupported.items():
            if refused:
                raise ConfigError(
                    message(
                        f"{name} is not available with strategy='model_parallel': the "
                        "DTensor training step kerastrain runs there trains in float32, one "
                        "step per call, without XLA, gradient accumulation, EMA or the "
                        "learning-rate range test",
                        received={name: value},
                        allowed="leave it at its default with strategy='model_parallel'",
                    )
                )

    @property
    def strategy_kind(self) -> str | None:
        """The strategy's name or kind (`"mirrored"`, `"parameter_server"`);
        None for a strategy object."""
        if isinstance(self.strategy, Mapping):
            return self.strategy["kind"]
        return self.strategy if isinstance(self.strategy, str) else None

    @property
    def batch_size(self) -> int:
        """The resolved batch size (per replica).

        Raises:
            ConfigError: While `train.batch_size` is still `"auto"` (the
                pipeline measures it after reading the data).
        """
        if self.train.batch_size == "auto":
            raise ConfigError(
                message(
                    "train.batch_size='auto' is measured by fit_pipeline after the data "
                    "is read; it has no value yet",
                    received={"train.batch_size": "auto"},
                    allowed="kerastrain.training.batch_size.pick_batch_size resolves it",
                )
            )
        return int(self.train.batch_size)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {str(path)!r}: {exc.strerror}.") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"The config file {str(path)!r} is not valid YAML{where}: {problem}."
        ) from None
    if loaded is None:  # most likely the wrong file: running the defaults would hide it
        raise ConfigError(
            message(
                f"The config file {str(path)!r} holds no options",
                allowed="Write at least `data:` and `model:` in it (see "
                "`kerastrain demo` for a run on the defaults)",
            )
        )
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"The config file {str(path)!r} must hold a mapping of options "
            f"(data, model, train, ...); it holds a {type(loaded).__name__}."
        )
    return loaded


def load_config(
    config: PipelineConfig | Mapping[str, Any] | str | os.PathLike | None = None, **overrides: Any
) -> PipelineConfig:
    """Builds a checked `PipelineConfig` from a config and keyword overrides.

    Sections given as keyword arguments override the config's key by key,
    nested sections too (`train={"epochs": 3}` keeps the config's optimizer,
    `train={"warmup": {"epochs": 1}}` its warmup method); other keywords
    replace the config's value. Neither `config` nor the sections given are
    changed: the result holds new sections where it needs other values.

    Args:
        config: A `PipelineConfig`, a mapping with the same keys as
            `fit_pipeline`'s arguments, or the path of a YAML file.
            Defaults to `None` (all defaults).
        **overrides: Options that take precedence over `config`; a `None`
            value means "not given" and is ignored.

    Returns:
        The checked configuration.

    Raises:
        ConfigError: For an unreadable file, an unknown key or a bad value.

    Example:
        >>> load_config({"train": {"epochs": 3}}, train={"optimizer": "sgd"}).train.epochs
        3
    """
    if isinstance(config, PipelineConfig):
        base: dict[str, Any] = config.option_values()
    elif isinstance(config, (str, os.PathLike)):
        base = _read_yaml(Path(config))
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise config_error("config", config, "a PipelineConfig, a mapping or a YAML file path")

    names = [f.name for f in dataclasses.fields(PipelineConfig)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in overrides:
        if key not in names:
            raise ConfigError(
                f"Unknown option {key!r}. The options are: {', '.join(names)}."
                + did_you_mean(key, names)
            )
    merged = PipelineConfig.merged(base, overrides)
    if isinstance(merged.get("output_dir"), os.PathLike):  # a pathlib.Path is welcome too
        merged["output_dir"] = os.fspath(merged["output_dir"])
    return PipelineConfig.from_dict(merged)


def save_config(config: PipelineConfig, path: str | os.PathLike) -> Path:
    """Writes the resolved config as YAML (atomically) and returns its path.

    Values that YAML cannot hold (in-memory arrays, a model object) are
    written as a short description, so such a run is repeated by passing the
    same objects again with `config=` this file. A strategy object should be
    replaced by its kind and options first
    (`kerastrain.distribute.strategy_spec`), as `fit_pipeline` does.
    """
    return atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
