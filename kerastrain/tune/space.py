"""The search space on KerasTuner's `HyperParameters`, and a trial's config.

A space comes from `TuneConfig.space` (declared here, with conditional
scopes for ``when``) or from the user's ``build(hp)``. Either way a trial's
values become a new `PipelineConfig` through :func:`trial_config`, so a trial
is configured exactly like the final fit.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import keras_tuner as kt

from kerastrain._keras import keras
from kerastrain.config import PipelineConfig
from kerastrain.config.tune import (
    TRAINING_OPTIONS,
    BoolEntry,
    ChoiceEntry,
    FloatEntry,
    IntEntry,
    SpaceEntry,
    TuneConfig,
    route,
)
from kerastrain.errors import ConfigError, message
from kerastrain.models import factory_for, factory_options

__all__ = ["Space", "trial_config", "plain_values"]

#: Values Hyperband adds to a trial; they are not options.
TUNER_KEYS = (
    "tuner/epochs",
    "tuner/initial_epoch",
    "tuner/bracket",
    "tuner/round",
    "tuner/trial_id",
)


def _python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def plain_values(hp: kt.HyperParameters) -> dict[str, Any]:
    """The trial's active option values (Python scalars, Hyperband's keys removed)."""
    return {k: _python(v) for k, v in hp.values.items() if k not in TUNER_KEYS}


def _chain(space: Mapping[str, SpaceEntry], name: str) -> list[tuple[str, list[Any]]]:
    """The conditions of ``name``, outermost first."""
    conditions: list[tuple[str, list[Any]]] = []
    for parent, values in space[name].conditions.items():
        conditions = _chain(space, parent) + [(parent, list(values))]
    return conditions


def _declare(hp: kt.HyperParameters, name: str, entry: SpaceEntry) -> Any:
    if isinstance(entry, (IntEntry, FloatEntry)):
        declare = hp.Int if isinstance(entry, IntEntry) else hp.Float
        return declare(
            name,
            entry.min,
            entry.max,
            step=entry.step,
            sampling=entry.sampling,
            default=entry.default,
        )
    if isinstance(entry, ChoiceEntry):
        return hp.Choice(name, entry.values, default=entry.default)
    if isinstance(entry, BoolEntry):
        return hp.Boolean(name, default=entry.default)
    return hp.Fixed(name, entry.value)


def declare_space(space: Mapping[str, SpaceEntry], hp: kt.HyperParameters) -> dict[str, Any]:
    """Declares every entry of ``space`` on ``hp``; returns the active values."""
    values: dict[str, Any] = {}
    ordered = sorted(space, key=lambda n: len(_chain(space, n)))  # parents first
    for name in ordered:
        with contextlib.ExitStack() as scopes:
            for parent, parent_values in _chain(space, name):
                scopes.enter_context(hp.conditional_scope(parent, parent_values))
            value = _declare(hp, name, space[name])
        if value is not None:
            values[name] = _python(value)
    return values


def resolve_build(build: Any) -> Callable[..., Any]:
    """``tune.build`` as a function (importing ``"module:function"``)."""
    if not isinstance(build, str):
        return build
    module_name, _, attr = build.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            message(
                f"The 'tune.build' option names a function that cannot be imported: {exc}",
                received={"tune.build": build},
                allowed="Give its import path as 'module:function'",
            )
        ) from None


class Space:
    """Calls the space's declaration (config or ``build(hp)``) on a `HyperParameters`.

    Args:
        tune: The tuning options.
        shapes: `input_shape`, `num_outputs` and `output_activation`, passed to
            a user `build` that asks for them.
    """

    def __init__(self, tune: TuneConfig, shapes: Mapping[str, Any]):
        self.tune = tune
        self.build = resolve_build(tune.build) if tune.build is not None else None
        self._shapes = dict(shapes)
        #: Whether `build` returns a model (set by `discover`).
        self.returns_model = False

    def __call__(self, hp: kt.HyperParameters) -> Any:
        """The values (a mapping) or the model that ``hp`` describes."""
        if self.build is None:
            return declare_space(self.tune.space, hp)
        params = inspect.signature(self.build).parameters
        extra = {k: v for k, v in self._shapes.items() if k in params}
        return self.build(hp, **extra)

    def discover(self) -> kt.HyperParameters:
        """Every parameter of the space, conditional ones included.

        Builds repeatedly, setting each never-active condition, as
        KerasTuner's own tuner does when it populates a space.
        """
        oracle = kt.Oracle(max_trials=1)
        seen_active: list[Any] = []
        never_active: list[Any] = []
        hp = oracle.get_space()
        while True:
            self._call_and_free(hp)
            oracle.update_space(hp)
            for conditions in hp.active_scopes:
                if conditions not in seen_active:
                    seen_active.append(copy.deepcopy(conditions))
                if conditions in never_active:
                    never_active.remove(conditions)
            for conditions in hp.inactive_scopes:
                if conditions not in seen_active and conditions not in never_active:
                    never_active.append(copy.deepcopy(conditions))
            if not never_active:
                break
            hp = oracle.get_space()
            for condition in never_active[0]:
                hp.values[condition.name] = condition.values[0]
            hp.ensure_active_values()
        space = oracle.get_space()
        if not space.space:
            raise ConfigError(
                message(
                    "The function given as 'tune.build' declared no hyper-parameter",
                    allowed="Call hp.Int, hp.Float, hp.Choice or hp.Boolean in it",
                )
            )
        return space

    def _call_and_free(self, hp: kt.HyperParameters) -> None:
        result = self(hp)
        if isinstance(result, keras.Model):
            self.returns_model = True
            del result
            keras.backend.clear_session()

    def fingerprint(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """What must not change when a search resumes (JSON-ready)."""
        entries = {}
        for p in hp.space:
            config = p.get_config()
            entries[config.pop("name")] = {"class": type(p).__name__, **config}
        return json.loads(json.dumps({**self.tune.fingerprint(), "space": entries}, default=repr))


def check_model_options(
    config: PipelineConfig,
    space_hp: kt.HyperParameters,
    feature_shape: tuple[int, ...],
    builds_model: bool,
    text: bool = False,
) -> None:
    """Refuses a model option the factory does not accept, before searching.

    Raises:
        ConfigError: Naming the parameter and listing the accepted names.
    """
    names = [p.name for p in space_hp.space if route(p.name)[0] == "model_options"]
    if not names or builds_model:
        return
    spec = config.model
    if isinstance(spec, str):
        factory, label = factory_for(spec, feature_shape, text=text), spec
    elif callable(spec) and not isinstance(spec, keras.Model):
        factory, label = spec, getattr(spec, "__name__", "callable")
    else:
        raise ConfigError(
            message(
                f"The search space tunes model options ({', '.join(names)}), but the "
                "model is a built tf_keras model, which takes none",
                allowed="Pass a factory",
            )
        )
    accepted = factory_options(factory)
    if accepted is None:
        return
    for name in names:
        key = route(name)[1]
        if key not in accepted:
            raise ConfigError(
                message(
                    f"'tune.space.{name}' is neither a training option nor an option of the "
                    f"model factory {label!r}",
                    allowed=f"The factory accepts: {', '.join(accepted) or 'no options'}; "
                    f"training options: {', '.join(TRAINING_OPTIONS)}, and optimizer keywords "
                    "such as momentum",
                    candidates=accepted,
                    near=key,
                )
            )


def _hyper_factory(space: Space, hp: kt.HyperParameters) -> Callable[..., keras.Model]:
    """A model factory that builds ``space.build(hp)`` (for `build_model`)."""

    def factory(input_shape: Any, num_outputs: int, output_activation: str) -> keras.Model:
        return space(hp)

    factory.__name__ = getattr(space.build, "__name__", "build")
    return factory


def trial_config(base: PipelineConfig, space: Space, hp: kt.HyperParameters) -> PipelineConfig:
    """A new config with the values of ``hp``: training options into `train`,
    optimizer keywords into `train.optimizer_options`, the rest into
    `model_options` (or into the user's `build`, when it returns a model).

    Raises:
        ConfigError: When a value is refused by the section it goes to.
    """
    builds_model = space.returns_model
    result = None if builds_model else space(hp)
    if builds_model:
        values = plain_values(hp)
    elif isinstance(result, Mapping):
        values = {k: _python(v) for k, v in result.items()}
    else:
        raise ConfigError(
            message(
                "The 'tune.build' function must return a mapping of option values or a "
                f"tf_keras model; it returned a {type(result).__name__}",
            )
        )
    train: dict[str, Any] = {}
    optimizer: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for name, value in values.items():
        where, key = route(name)
        {"train": train, "optimizer_options": optimizer, "model_options": model}[where][key] = value
    changes: dict[str, Any] = {}
    if train or optimizer:
        if optimizer:
            train["optimizer_options"] = {**base.train.optimizer_options, **optimizer}
        changes["train"] = base.train.replace(**train)
        if "batch_size" in train:
            changes["data_options"] = base.data_options.replace(batch_size=train["batch_size"])
    if builds_model:  # the user's build owns the model: no factory options
        changes.update(model=_hyper_factory(space, hp), model_options={})
    elif model:
        changes["model_options"] = {**base.model_options, **model}
    return base.replace(**changes) if changes else base
