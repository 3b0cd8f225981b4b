"""Hyper-parameter search options: ``fit_pipeline(tune={...})``.

The search space is declared here as plain data and checked on construction,
without TensorFlow. Each entry names a training option (``learning_rate``,
``batch_size``, ``optimizer``, ``weight_decay``, ``warmup_epochs``,
``epochs``), an optimizer option (``momentum``, ``beta_1``, ...; see
`OPTIMIZER_OPTIONS`), or a keyword option of the model factory (any other
name; ``model_options.NAME`` forces that reading)::

    space:
      learning_rate: {type: float, min: 1.0e-4, max: 1.0e-1, log: true}
      width: {type: int, min: 16, max: 128, step: 16}
      optimizer: [adam, sgd]                  # a bare list is a choice
      momentum: {type: float, min: 0.0, max: 0.95, when: {optimizer: sgd}}
      batch_norm: {type: bool}
      activation: relu                        # a bare value is fixed
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from kerastrain.config.base import Section, option
from kerastrain.config.train import COMMON_OPTIMIZER_OPTIONS, OPTIMIZER_OPTIONS
from kerastrain.errors import ConfigError, config_error, did_you_mean

__all__ = ["TuneConfig", "TRAINING_OPTIONS", "route", "infer_direction"]

Algorithm = Literal["random", "grid", "bayesian", "hyperband"]

#: Space names that set a `TrainConfig` field rather than a model option.
TRAINING_OPTIONS = (
    "learning_rate",
    "batch_size",
    "optimizer",
    "weight_decay",
    "warmup_epochs",
    "epochs",
)
#: Every optimizer keyword that a space name may tune (train.optimizer_options).
OPTIMIZER_KEYWORDS = tuple(
    sorted({k for keys in OPTIMIZER_OPTIONS.values() for k in keys} | set(COMMON_OPTIMIZER_OPTIONS))
)
MODEL_PREFIX = "model_options."
#: Objective names containing one of these are maximized (unless told).
MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "r2")

TYPES = ("int", "float", "choice", "bool", "fixed")
_KEYS = {
    "int": ("type", "min", "max", "step", "log", "sampling", "default", "when"),
    "float": ("type", "min", "max", "step", "log", "sampling", "default", "when"),
    "choice": ("type", "values", "default", "when"),
    "bool": ("type", "default", "when"),
    "fixed": ("type", "value", "when"),
}
SAMPLINGS = ("linear", "log", "reverse_log")
_SCALARS = (bool, int, float, str)


def route(name: str) -> tuple[str, str]:
    """Where a space name goes: ``("train", field)``, ``("optimizer_options",
    key)`` or ``("model_options", key)``.

    Example:
        >>> route("momentum"), route("model_options.momentum")
        (('optimizer_options', 'momentum'), ('model_options', 'momentum'))
    """
    if name.startswith(MODEL_PREFIX):
        return "model_options", name[len(MODEL_PREFIX) :]
    if name in TRAINING_OPTIONS:
        return "train", name
    if name in OPTIMIZER_KEYWORDS:
        return "optimizer_options", name
    return "model_options", name


def infer_direction(name: str) -> str:
    """``"max"`` for accuracy-like objectives, ``"min"`` otherwise."""
    lowered = name.lower()
    return "max" if any(key in lowered for key in MAXIMIZED) else "min"


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _entry(name: str, spec: Any) -> dict[str, Any]:
    """One space entry in its canonical form (a mapping with ``type``)."""
    path = f"tune.space.{name}"
    if isinstance(spec, (list, tuple)):
        spec = {"type": "choice", "values": list(spec)}
    elif isinstance(spec, _SCALARS):
        spec = {"type": "fixed", "value": spec}
    elif not isinstance(spec, Mapping):
        raise config_error(
            path,
            spec,
            "a list of choices, a fixed value, or a mapping with "
            "'type' (one of " + ", ".join(TYPES) + ")",
        )
    spec = dict(spec)
    kind = spec.get("type")
    if kind not in TYPES:
        raise config_error(f"{path}.type", kind, "one of " + ", ".join(map(repr, TYPES)), TYPES)
    for key in spec:
        if key not in _KEYS[kind]:
            raise ConfigError(
                f"Unknown option '{path}.{key}' for a {kind} parameter. It "
                f"accepts: {', '.join(_KEYS[kind])}." + did_you_mean(key, _KEYS[kind])
            )
    out: dict[str, Any] = {"type": kind}
    if kind in ("int", "float"):
        integer = kind == "int"
        for key in ("min", "max"):
            if key not in spec:
                raise ConfigError(f"The {kind} parameter {path!r} needs '{key}'.")
            if not _number(spec[key], integer):
                raise config_error(
                    f"{path}.{key}", spec[key], "an integer" if integer else "a number"
                )
        low, high = spec["min"], spec["max"]
        if not low < high:
            raise config_error(f"{path}.max", high, f"greater than min={low}")
        sampling = spec.get("sampling", "log" if spec.get("log") else "linear")
        if "log" in spec and not isinstance(spec["log"], bool):
            raise config_error(f"{path}.log", spec["log"], "true or false")
        if sampling not in SAMPLINGS:
            raise config_error(
                f"{path}.sampling", sampling, "one of " + ", ".join(map(repr, SAMPLINGS)), SAMPLINGS
            )
        if sampling != "linear" and low <= 0:
            raise config_error(f"{path}.min", low, f"> 0 for {sampling} sampling")
        step = spec.get("step")
        if step is not None and (not _number(step, integer) or step <= 0):
            raise config_error(
                f"{path}.step", step, "a positive " + ("integer" if integer else "number")
            )
        out.update(
            min=low if integer else float(low),
            max=high if integer else float(high),
            step=step,
            sampling=sampling,
        )
        default = spec.get("default")
        if default is not None and (not _number(default, integer) or not low <= default <= high):
            raise config_error(f"{path}.default", default, f"a value between {low} and {high}")
        out["default"] = default
    elif kind == "choice":
        values = spec.get("values")
        if not isinstance(values, (list, tuple)) or not values:
            raise config_error(f"{path}.values", values, "a non-empty list")
        values = list(values)
        if any(not isinstance(v, _SCALARS) for v in values):
            raise config_error(f"{path}.values", values, "a list of numbers, strings or booleans")
        kinds = {
            bool if isinstance(v, bool) else str if isinstance(v, str) else "number" for v in values
        }
        if len(kinds) > 1:
            raise config_error(
                f"{path}.values",
                values,
                "values of one type (KerasTuner's Choice cannot mix strings, numbers and booleans)",
            )
        if len(set(map(repr, values))) != len(values):
            raise config_error(f"{path}.values", values, "a list without repeats")
        default = spec.get("default")
        if default is not None and default not in values:
            raise config_error(
                f"{path}.default",
                default,
                "one of the values " + ", ".join(map(repr, values)),
                values,
            )
        out.update(values=values, default=default)
    elif kind == "bool":
        default = spec.get("default", False)
        if not isinstance(default, bool):
            raise config_error(f"{path}.default", default, "true or false")
        out["default"] = default
    else:
        value = spec.get("value")
        if not isinstance(value, _SCALARS):
            raise config_error(f"{path}.value", value, "a number, a string or a boolean")
        out["value"] = value
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, Mapping) or not when:
            raise config_error(
                f"{path}.when",
                when,
                "a mapping of parent names to a value or a list of values, e.g. {optimizer: sgd}",
            )
        if len(when) != 1:
            raise config_error(
                f"{path}.when",
                when,
                "one parent (KerasTuner nests conditional "
                "scopes; make the parent itself conditional to chain them)",
            )
        out["when"] = {
            str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in when.items()
        }
    return out


def _possible(entry: Mapping[str, Any]) -> list[Any] | None:
    """The values a parent can take, or None when they are not enumerable."""
    kind = entry["type"]
    if kind == "choice":
        return list(entry["values"])
    if kind == "bool":
        return [False, True]
    if kind == "fixed":
        return [entry["value"]]
    if kind == "int":
        return list(range(entry["min"], entry["max"] + 1, entry["step"] or 1))
    return None


def _corners(entry: Mapping[str, Any]) -> list[Any]:
    """The extreme and listed values an entry can take (to check them)."""
    if entry["type"] in ("int", "float"):
        return [entry["min"], entry["max"]]
    return _possible(entry) or []


def _same(a: Any, b: Any) -> bool:
    """Equal and both booleans or both not (``True == 1`` does not count)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _check_conditions(space: Mapping[str, Mapping[str, Any]]) -> None:
    for name, entry in space.items():
        for parent, values in entry.get("when", {}).items():
            path = f"tune.space.{name}.when.{parent}"
            if parent == name or parent not in space:
                others = [n for n in space if n != name]
                raise ConfigError(
                    f"The condition {path!r} names {parent!r}, which is not another parameter "
                    f"of the space ({', '.join(others) or 'none'})." + did_you_mean(parent, others)
                )
            possible = _possible(space[parent])
            if possible is None:
                raise config_error(
                    path,
                    values,
                    f"a condition on a choice, bool, int or fixed parameter; {parent!r} is a float",
                )
            for value in values:
                if not any(_same(value, p) for p in possible):
                    raise config_error(
                        path,
                        value,
                        f"one of the values of {parent!r}: " + ", ".join(map(repr, possible[:10])),
                        possible,
                    )
    # No cycles: every chain of parents ends.
    for name in space:
        seen, todo = {name}, list(space[name].get("when", {}))
        while todo:
            parent = todo.pop()
            if parent in seen:
                raise ConfigError(
                    f"The conditions of 'tune.space.{name}' form a cycle through "
                    f"{parent!r}; a parameter cannot depend on itself."
                )
            seen.add(parent)
            todo.extend(space[parent].get("when", {}))


def _check_optimizer_options(space: Mapping[str, Mapping[str, Any]]) -> None:
    """An optimizer keyword must be valid for every optimizer it can meet."""
    opt = space.get("optimizer")
    if opt is None:
        return  # checked against train.optimizer when the pipeline config is built
    names = _possible(opt) or []
    unknown = [n for n in names if n not in OPTIMIZER_OPTIONS]
    if unknown:
        raise config_error(
            "tune.space.optimizer",
            unknown[0],
            "one of " + ", ".join(map(repr, OPTIMIZER_OPTIONS)),
            OPTIMIZER_OPTIONS,
        )
    for name, entry in space.items():
        where, key = route(name)
        if where != "optimizer_options":
            continue
        active = entry.get("when", {}).get("optimizer", names)
        refusing = [o for o in active if key not in OPTIMIZER_OPTIONS[o] + COMMON_OPTIMIZER_OPTIONS]
        if refusing:
            accepting = [o for o in names if key in OPTIMIZER_OPTIONS[o] + COMMON_OPTIMIZER_OPTIONS]
            raise ConfigError(
                f"The tuned optimizer option 'tune.space.{name}' is not accepted by "
                f"{', '.join(map(repr, refusing))}, which 'tune.space.optimizer' can choose. "
                f"Make it conditional: when: {{optimizer: {accepting or '[...]'}}}."
            )


@dataclasses.dataclass
class TuneConfig(Section):
    """How hyper-parameters are searched before the final fit.

    Attributes:
        algorithm: KerasTuner's oracle: `"random"`, `"grid"`, `"bayesian"`
            or `"hyperband"`. Defaults to `"random"`.
        max_trials: The most trials to run (a grid or Hyperband may stop
            sooner). Defaults to `10`.
        max_epochs: The most epochs one trial trains, and Hyperband's
            largest budget. Defaults to `None`: `train.epochs`.
        objective: The logged quantity to optimize, `"val_loss"` or
            `{"name": "val_f1", "direction": "max"}`; the direction is
            inferred from the name when omitted (accuracy, auc, precision,
            recall, f1 and r2 are maximized). Validation metrics that Keras
            does not log (`val_f1`, `val_precision`, `val_recall`,
            `val_roc_auc`, `val_r2`) are computed with scikit-learn after each
            epoch. Defaults to `"val_loss"`.
        space: Parameter name to its range (see the module docstring).
            Defaults to `{}` (only allowed with `build`).
        build: A function `build(hp)` of a KerasTuner `HyperParameters`
            that declares the space in code and returns either a mapping of
            option values (routed like space names) or a tf_keras model
            (compiled by kerastrain with the trial's training options). It
            may also take `input_shape`, `num_outputs` and
            `output_activation`. In YAML, give its import path
            `"package.module:function"`. Defaults to `None`.
        directory: Folder of the search state; rerunning with the same
            folder resumes the search without repeating completed trials.
            Defaults to `None`: `<run folder>/tuning`.
        cv_folds: Score each trial by the mean of its best validation
            objective over this many folds of the training and validation
            rows (stratified for classification). Defaults to `None`.
        max_consecutive_failures: Stop the search after this many trials in
            a row fail (NaN loss, out of memory, ...). Defaults to `3`.
        executions: Trainings per trial from fresh initializations; the
            score is their mean. Defaults to `1`.
        hyperband_factor: Hyperband's reduction factor. Defaults to `3`.
        hyperband_iterations: Full Hyperband sweeps. Defaults to `1`.
        seed: Seed of the oracle. Defaults to `None`: the run's seed.
        overwrite: Discard the state in `directory` and start afresh.
            Defaults to `False`.
    """

    _path: ClassVar[str] = "tune"

    algorithm: Algorithm = "random"
    max_trials: int = option(10, gt=0)
    max_epochs: int | None = option(None, gt=0)
    objective: str | dict[str, Any] = "val_loss"
    space: dict[str, Any] = dataclasses.field(default_factory=dict)
    build: Any = None
    directory: str | None = None
    cv_folds: int | None = option(None, ge=2)
    max_consecutive_failures: int = option(3, gt=0)
    executions: int = option(1, gt=0)
    hyperband_factor: int = option(3, ge=2)
    hyperband_iterations: int = option(1, gt=0)
    seed: int | None = None
    overwrite: bool = False

    def validate(self) -> None:
        self._validate_objective()
        if (
            self.build is not None
            and not callable(self.build)
            and not (isinstance(self.build, str) and ":" in self.build)
        ):
            raise config_error(
                "tune.build",
                self.build,
                "a function build(hp) or its import path 'module:function'",
            )
        if not self.space and self.build is None:
            raise ConfigError(
                "tune needs a search space: set 'tune.space' (a mapping of "
                "parameter names to ranges) or 'tune.build' (a function build(hp))."
            )
        if self.space and self.build is not None:
            raise ConfigError(
                "Set either 'tune.space' or 'tune.build', not both: build(hp) "
                "declares the whole space in code."
            )
        space = {}
        for name, spec in self.space.items():
            if not isinstance(name, str) or not name:
                raise config_error("tune.space", name, "a mapping whose keys are parameter names")
            space[name] = _entry(name, spec)
        _check_conditions(space)
        _check_optimizer_options(space)
        object.__setattr__(self, "space", space)
        if self.algorithm == "grid":
            for name, entry in space.items():
                if entry["type"] == "float" and entry["step"] is None:
                    raise ConfigError(
                        f"A grid search needs a finite grid, but 'tune.space.{name}' is a float "
                        "range without 'step'. Give it a step or a list of values."
                    )
        if self.algorithm == "hyperband":
            if "epochs" in space:
                raise ConfigError(
                    "Hyperband decides each trial's epochs itself; remove "
                    "'tune.space.epochs' or choose another algorithm."
                )
            if self.cv_folds is not None:
                raise ConfigError(
                    "tune.cv_folds cannot be combined with algorithm='hyperband': Hyperband "
                    "continues one model from its parent trial's weights, and a cross-validated "
                    "trial trains one model per fold. Use 'random', 'grid' or 'bayesian'."
                )
        if self.directory is not None and not isinstance(self.directory, str):
            object.__setattr__(self, "directory", str(self.directory))

    def _validate_objective(self) -> None:
        objective = self.objective
        if isinstance(objective, str):
            objective = {"name": objective}
        unknown = [k for k in objective if k not in ("name", "direction")]
        if unknown:
            raise ConfigError(
                f"Unknown option 'tune.objective.{unknown[0]}'. The objective "
                "options are: name, direction." + did_you_mean(unknown[0], ["name", "direction"])
            )
        name = objective.get("name")
        if not isinstance(name, str) or not name:
            raise config_error("tune.objective.name", name, "a logged quantity such as 'val_loss'")
        direction = objective.get("direction") or infer_direction(name)
        if direction not in ("min", "max"):
            raise config_error(
                "tune.objective.direction", direction, "'min' or 'max'", ("min", "max")
            )
        object.__setattr__(self, "objective", {"name": name, "direction": direction})

    def check_train(self, train: Any) -> None:
        """Checks the space against the training options it will change.

        Args:
            train: The run's `TrainConfig`.

        Raises:
            ConfigError: For a training option that does not exist, a value a
                trial's `TrainConfig` would refuse, or optimizer options that
                the optimizers of the space do not accept.
        """
        fields = {f.name for f in dataclasses.fields(train)}
        # Optimizer options the space tunes are the space's to keep consistent.
        tuned = {route(n)[1] for n in self.space if route(n)[0] == "optimizer_options"}
        train = train.replace(
            optimizer_options={k: v for k, v in train.optimizer_options.items() if k not in tuned}
        )
        opt_entry = self.space.get("optimizer")
        optimizers = _possible(opt_entry) if opt_entry else [train.optimizer]
        for key in train.optimizer_options:
            refusing = [
                o for o in optimizers if key not in OPTIMIZER_OPTIONS[o] + COMMON_OPTIMIZER_OPTIONS
            ]
            if refusing:
                raise ConfigError(
                    f"train.optimizer_options sets {key!r}, which {', '.join(map(repr, refusing))}"
                    f" (a choice of 'tune.space.optimizer') does not accept. Tune it as "
                    f"'tune.space.{key}' with when: {{optimizer: ...}} instead."
                )
        for name, entry in self.space.items():
            where, key = route(name)
            if where == "train":
                if key not in fields:
                    raise ConfigError(
                        f"'tune.space.{name}' tunes 'train.{key}', which this "
                        "version's training options do not have."
                    )
                for value in _corners(entry):
                    try:
                        train.replace(**{key: value})
                    except ConfigError as exc:
                        raise ConfigError(
                            f"'tune.space.{name}' can take the value {value!r}, "
                            f"which training refuses: {exc}"
                        ) from None
            elif where == "optimizer_options" and opt_entry is None:
                accepted = OPTIMIZER_OPTIONS[train.optimizer] + COMMON_OPTIMIZER_OPTIONS
                if key not in accepted:
                    raise ConfigError(
                        f"'tune.space.{name}' tunes an option of the optimizer, but "
                        f"train.optimizer={train.optimizer!r} accepts only: "
                        f"{', '.join(accepted)}." + did_you_mean(key, accepted)
                    )

    @property
    def objective_name(self) -> str:
        return self.objective["name"]

    @property
    def direction(self) -> str:
        return self.objective["direction"]

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed search must share with the one that wrote its state."""
        return {
            "algorithm": self.algorithm,
            "objective": dict(self.objective),
            "cv_folds": self.cv_folds,
            "executions": self.executions,
            "hyperband_factor": self.hyperband_factor if self.algorithm == "hyperband" else None,
        }
