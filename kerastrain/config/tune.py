"""Hyper-parameter search options: ``fit_pipeline(tune={...})``.

The search space is declared here as plain data and checked on construction,
without TensorFlow: each entry becomes a section of its kind (`FloatEntry`,
`IntEntry`, `ChoiceEntry`, `BoolEntry`, `FixedEntry`). Each entry names a
training option (``learning_rate``, ``batch_size``, ``optimizer``,
``weight_decay``, ``warmup.epochs``, ``epochs``; see `TRAINING_OPTIONS`), an
optimizer option (``momentum``, ``beta_1``, ...; see `OPTIMIZER_OPTIONS`), or
a keyword option of the model factory (any other name; ``model_options.NAME``
forces that reading)::

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

from kerastrain.config.base import Section, option, warn_renamed
from kerastrain.config.train import COMMON_OPTIMIZER_OPTIONS, OPTIMIZER_OPTIONS, TrainConfig
from kerastrain.errors import ConfigError, config_error, did_you_mean

__all__ = [
    "TuneConfig",
    "SpaceEntry",
    "FloatEntry",
    "IntEntry",
    "ChoiceEntry",
    "BoolEntry",
    "FixedEntry",
    "ENTRY_TYPES",
    "TRAINING_OPTIONS",
    "route",
    "infer_direction",
]

Algorithm = Literal["random", "grid", "bayesian", "hyperband"]

#: Space names that set a `TrainConfig` option rather than a model option
#: (a dotted name is an option of a nested section).
TRAINING_OPTIONS = (
    "learning_rate",
    "batch_size",
    "optimizer",
    "weight_decay",
    "warmup.epochs",
    "epochs",
)
#: Space names of earlier releases (the old flat training keys), still read
#: with a `DeprecationWarning`: the training option each sets.
RENAMED_TRAINING_OPTIONS = {
    old: new for old, new in TrainConfig._moved.items() if new in TRAINING_OPTIONS
}
#: Every optimizer keyword that a space name may tune (train.optimizer_options).
OPTIMIZER_KEYWORDS = tuple(
    sorted({k for keys in OPTIMIZER_OPTIONS.values() for k in keys} | set(COMMON_OPTIMIZER_OPTIONS))
)
MODEL_PREFIX = "model_options."
#: Objective names containing one of these are maximized (unless told).
MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "r2")

#: A value a choice or a fixed entry may hold.
Scalar = bool | int | float | str
Sampling = Literal["linear", "log", "reverse_log"]


def route(name: str) -> tuple[str, str]:
    """Where a space name goes: ``("train", option)``, ``("optimizer_options",
    key)`` or ``("model_options", key)``.

    Example:
        >>> route("momentum"), route("model_options.momentum")
        (('optimizer_options', 'momentum'), ('model_options', 'momentum'))
        >>> route("warmup.epochs"), route("warmup_epochs")
        (('train', 'warmup.epochs'), ('train', 'warmup.epochs'))
    """
    if name.startswith(MODEL_PREFIX):
        return "model_options", name[len(MODEL_PREFIX) :]
    if name in TRAINING_OPTIONS:
        return "train", name
    if name in RENAMED_TRAINING_OPTIONS:
        return "train", RENAMED_TRAINING_OPTIONS[name]
    if name in OPTIMIZER_KEYWORDS:
        return "optimizer_options", name
    return "model_options", name


def infer_direction(name: str) -> str:
    """``"max"`` for accuracy-like objectives, ``"min"`` otherwise."""
    lowered = name.lower()
    return "max" if any(key in lowered for key in MAXIMIZED) else "min"


@dataclasses.dataclass(kw_only=True)
class SpaceEntry(Section):
    """Base of one entry of ``tune.space``; its `type` key picks the kind.

    Every kind has `when`: the condition under which the entry is active,
    ``{parent: value or [values]}`` (one parent; KerasTuner nests
    conditional scopes, so a chain is made by conditioning the parent).
    """

    _path: ClassVar[str] = "tune.space"

    def validate(self) -> None:
        when = getattr(self, "when", None)
        if when is None:
            return
        path = self._field_path("when")
        if not when:
            raise config_error(
                path,
                when,
                "a mapping of parent names to a value or a list of values, e.g. {optimizer: sgd}",
            )
        if len(when) != 1:
            raise config_error(
                path,
                when,
                "one parent (KerasTuner nests conditional "
                "scopes; make the parent itself conditional to chain them)",
            )
        object.__setattr__(
            self,
            "when",
            {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in when.items()},
        )

    @property
    def conditions(self) -> dict[str, list[Any]]:
        """`when` as ``{parent: [values]}``, empty for an unconditional entry."""
        return dict(getattr(self, "when", None) or {})

    def possible(self) -> list[Any] | None:
        """The values the entry can take, or None when they are not enumerable."""
        return None

    def corners(self) -> list[Any]:
        """The extreme and listed values the entry can take (to check them)."""
        return self.possible() or []


@dataclasses.dataclass(kw_only=True)
class _RangeEntry(SpaceEntry):
    """The checks that `IntEntry` and `FloatEntry` share."""

    def validate(self) -> None:
        low, high = self.min, self.max
        if not low < high:
            raise config_error(self._field_path("max"), high, f"greater than min={low}")
        sampling = self.sampling or ("log" if self.log else "linear")
        if sampling != "linear" and low <= 0:
            raise config_error(self._field_path("min"), low, f"> 0 for {sampling} sampling")
        if self.default is not None and not low <= self.default <= high:
            raise config_error(
                self._field_path("default"), self.default, f"a value between {low} and {high}"
            )
        object.__setattr__(self, "sampling", sampling)
        object.__setattr__(self, "log", sampling == "log")
        super().validate()

    def corners(self) -> list[Any]:
        return [self.min, self.max]


@dataclasses.dataclass(kw_only=True)
class FloatEntry(_RangeEntry):
    """A range of numbers: ``{type: float, min: 1.0e-4, max: 0.1, log: true}``.

    Attributes:
        type: `"float"`.
        min: The smallest value. Required.
        max: The largest value. Required.
        step: Only multiples of this above `min` (a grid search needs it).
            Defaults to `None`.
        log: Sample on a log scale (the same as `sampling: log`).
            Defaults to `False`.
        sampling: `"linear"`, `"log"` or `"reverse_log"`; wins over `log`.
            Defaults to `None`: from `log`.
        default: The value tried first. Defaults to `None`.
        when: See `SpaceEntry`. Defaults to `None`.
    """

    type: Literal["float"] = "float"
    min: float
    max: float
    step: float | None = option(None, gt=0.0)
    log: bool = False
    sampling: Sampling | None = None
    default: float | None = None
    when: dict[str, Any] | None = None


@dataclasses.dataclass(kw_only=True)
class IntEntry(_RangeEntry):
    """A range of integers: ``{type: int, min: 16, max: 128, step: 16}``.

    Attributes:
        type: `"int"`.
        min: The smallest value. Required.
        max: The largest value (included). Required.
        step: Only multiples of this above `min`. Defaults to `None` (1).
        log: Sample on a log scale (the same as `sampling: log`).
            Defaults to `False`.
        sampling: `"linear"`, `"log"` or `"reverse_log"`; wins over `log`.
            Defaults to `None`: from `log`.
        default: The value tried first. Defaults to `None`.
        when: See `SpaceEntry`. Defaults to `None`.
    """

    type: Literal["int"] = "int"
    min: int
    max: int
    step: int | None = option(None, gt=0)
    log: bool = False
    sampling: Sampling | None = None
    default: int | None = None
    when: dict[str, Any] | None = None

    def possible(self) -> list[Any]:
        return list(range(self.min, self.max + 1, self.step or 1))


@dataclasses.dataclass(kw_only=True)
class ChoiceEntry(SpaceEntry):
    """One of listed values: ``{type: choice, values: [adam, sgd]}``, or a bare list.

    Attributes:
        type: `"choice"`.
        values: The values, all strings, all numbers or all booleans
            (KerasTuner's `Choice` cannot mix them), without repeats. Required.
        default: The value tried first, one of `values`. Defaults to `None`.
        when: See `SpaceEntry`. Defaults to `None`.
    """

    type: Literal["choice"] = "choice"
    values: list[Scalar]
    default: Scalar | None = None
    when: dict[str, Any] | None = None

    def validate(self) -> None:
        path = self._field_path("values")
        if not self.values:
            raise config_error(path, self.values, "a non-empty list")
        kinds = {
            bool if isinstance(v, bool) else str if isinstance(v, str) else "number"
            for v in self.values
        }
        if len(kinds) > 1:
            raise config_error(
                path,
                self.values,
                "values of one type (KerasTuner's Choice cannot mix strings, numbers and booleans)",
            )
        if len(set(map(repr, self.values))) != len(self.values):
            raise config_error(path, self.values, "a list without repeats")
        if self.default is not None and self.default not in self.values:
            raise config_error(
                self._field_path("default"),
                self.default,
                "one of the values " + ", ".join(map(repr, self.values)),
                self.values,
            )
        super().validate()

    def possible(self) -> list[Any]:
        return list(self.values)


@dataclasses.dataclass(kw_only=True)
class BoolEntry(SpaceEntry):
    """True or false: ``{type: bool}``.

    Attributes:
        type: `"bool"`.
        default: The value tried first. Defaults to `False`.
        when: See `SpaceEntry`. Defaults to `None`.
    """

    type: Literal["bool"] = "bool"
    default: bool = False
    when: dict[str, Any] | None = None

    def possible(self) -> list[Any]:
        return [False, True]


@dataclasses.dataclass(kw_only=True)
class FixedEntry(SpaceEntry):
    """One value, not searched: ``{type: fixed, value: relu}``, or a bare value.

    Attributes:
        type: `"fixed"`.
        value: The value. Required.
        when: See `SpaceEntry`. Defaults to `None`.
    """

    type: Literal["fixed"] = "fixed"
    value: Scalar
    when: dict[str, Any] | None = None

    def possible(self) -> list[Any]:
        return [self.value]


#: The section of each kind of entry, by its `type` key.
ENTRY_TYPES: dict[str, type[SpaceEntry]] = {
    "int": IntEntry,
    "float": FloatEntry,
    "choice": ChoiceEntry,
    "bool": BoolEntry,
    "fixed": FixedEntry,
}


def _entry(name: str, spec: Any) -> SpaceEntry:
    """One space entry as its section (a bare list is a choice, a bare value fixed)."""
    if isinstance(spec, SpaceEntry):
        return spec
    path = f"tune.space.{name}"
    if isinstance(spec, (list, tuple)):
        spec = {"type": "choice", "values": list(spec)}
    elif isinstance(spec, (bool, int, float, str)):
        spec = {"type": "fixed", "value": spec}
    elif not isinstance(spec, Mapping):
        raise config_error(
            path,
            spec,
            "a list of choices, a fixed value, or a mapping with "
            "'type' (one of " + ", ".join(ENTRY_TYPES) + ")",
        )
    kind = spec.get("type")
    if kind not in ENTRY_TYPES:
        raise config_error(
            f"{path}.type", kind, "one of " + ", ".join(map(repr, ENTRY_TYPES)), ENTRY_TYPES
        )
    return ENTRY_TYPES[kind].from_dict(spec, path, context=f"a {kind} parameter")


def _same(a: Any, b: Any) -> bool:
    """Equal and both booleans or both not (``True == 1`` does not count)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _check_conditions(space: Mapping[str, SpaceEntry]) -> None:
    for name, entry in space.items():
        for parent, values in entry.conditions.items():
            path = f"tune.space.{name}.when.{parent}"
            if parent == name or parent not in space:
                others = [n for n in space if n != name]
                raise ConfigError(
                    f"The condition {path!r} names {parent!r}, which is not another parameter "
                    f"of the space ({', '.join(others) or 'none'})." + did_you_mean(parent, others)
                )
            possible = space[parent].possible()
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
        seen, todo = {name}, list(space[name].conditions)
        while todo:
            parent = todo.pop()
            if parent in seen:
                raise ConfigError(
                    f"The conditions of 'tune.space.{name}' form a cycle through "
                    f"{parent!r}; a parameter cannot depend on itself."
                )
            seen.add(parent)
            todo.extend(space[parent].conditions)


def _check_targets(space: Mapping[str, SpaceEntry]) -> None:
    """Each option is tuned by one name; an old training name is read with a warning."""
    tuned: dict[tuple[str, str], str] = {}
    for name in space:
        target = route(name)
        if name in RENAMED_TRAINING_OPTIONS:
            warn_renamed(f"tune.space.{name}", f"tune.space.{target[1]}")
        if target in tuned:
            raise ConfigError(
                f"'tune.space.{tuned[target]}' and 'tune.space.{name}' both tune "
                f"'{target[0]}.{target[1]}'; keep one of them."
            )
        tuned[target] = name


def _check_optimizer_options(space: Mapping[str, SpaceEntry]) -> None:
    """An optimizer keyword must be valid for every optimizer it can meet."""
    opt = space.get("optimizer")
    if opt is None:
        return  # checked against train.optimizer when the pipeline config is built
    names = opt.possible() or []
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
        active = entry.conditions.get("optimizer", names)
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
        space: Parameter name to its range (see the module docstring); each
            becomes the section of its kind (`SpaceEntry`). Defaults to `{}`
            (only allowed with `build`).
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
        _check_targets(space)
        _check_optimizer_options(space)
        object.__setattr__(self, "space", space)
        if self.algorithm == "grid":
            for name, entry in space.items():
                if isinstance(entry, FloatEntry) and entry.step is None:
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
            ConfigError: For a value a trial's `TrainConfig` would refuse, or
                optimizer options that the optimizers of the space do not
                accept.
        """
        # Optimizer options the space tunes are the space's to keep consistent.
        tuned = {route(n)[1] for n in self.space if route(n)[0] == "optimizer_options"}
        train = train.replace(
            optimizer_options={k: v for k, v in train.optimizer_options.items() if k not in tuned}
        )
        opt_entry = self.space.get("optimizer")
        optimizers = opt_entry.possible() if opt_entry else [train.optimizer]
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
                for value in entry.corners():
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
