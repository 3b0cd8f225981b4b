"""Model factories by name, and turning the ``model`` option into a model.

The registry is an explicit dict filled here, not by import side effects;
:func:`register_model` adds a user's factory under a name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kerastrain._keras import ensure_tf_keras, keras
from kerastrain.data.preprocess import ModelInputs
from kerastrain.errors import ConfigError, config_error, message, one_of
from kerastrain.models.base import Head
from kerastrain.models.cnn import cnn
from kerastrain.models.mlp import mlp
from kerastrain.models.resnet import resnet
from kerastrain.models.transfer import FineTunePlan, transfer
from kerastrain.models.transformer import transformer, transformer_lm

logger = logging.getLogger(__name__)

__all__ = [
    "MODELS",
    "register_model",
    "factory_for",
    "factory_options",
    "build_model",
    "fine_tune_plan",
]

Factory = Callable[..., keras.Model]

MODELS: dict[str, Factory] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet": resnet,
    "transfer": transfer,
    "transformer": transformer,
    "transformer_lm": transformer_lm,
}

#: Arguments kerastrain passes itself; never model options.
_RESERVED = ("inputs", "head")


def register_model(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Makes ``factory`` available as ``model=name``.

    Args:
        name: The name used in configs.
        factory: `factory(inputs: ModelInputs, head: Head, **options) -> keras.Model`.
        overwrite: Replace a factory already registered under `name`.
            Defaults to `False`.

    Raises:
        ConfigError: When the name is taken and `overwrite` is False.
    """
    if name in MODELS and not overwrite and MODELS[name] is not factory:
        raise ConfigError(
            message(
                f"A model factory is already registered as {name!r}",
                received={"overwrite": overwrite},
                allowed="Pass overwrite=True to replace it, or register it under another name",
            )
        )
    MODELS[name] = factory


def factory_for(spec: str, feature_shape: tuple, *, text: bool = False) -> Factory:
    """The factory that ``model=spec`` names; ``"auto"`` picks by input rank.

    ``"auto"`` is `transformer` when the data has text columns, `mlp` for
    one feature axis and `cnn` for images (`(h, w)` or `(h, w, c)`).
    """
    if spec == "auto":
        chosen = "transformer" if text else "mlp" if len(feature_shape) == 1 else "cnn"
        logger.info("model='auto' chose %r for inputs of shape %s.", chosen, feature_shape)
        return MODELS[chosen]
    if spec not in MODELS:
        names = ["auto", *MODELS]
        raise config_error(
            "model",
            spec,
            one_of(names) + ", a callable, or a tf_keras model",
            names,
        )
    return MODELS[spec]


def factory_options(factory: Callable[..., Any]) -> tuple[str, ...] | None:
    """Keyword options a factory accepts, or None when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(
        p.name
        for p in params
        if p.name not in _RESERVED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def _check_options(factory: Callable[..., Any], options: Mapping[str, Any], name: str) -> None:
    accepted = factory_options(factory)
    if accepted is None:
        return
    for key in options:
        if key not in accepted:
            raise ConfigError(
                message(
                    f"Unknown option 'model_options.{key}' for model {name!r}",
                    allowed=f"It accepts: {', '.join(accepted) or 'no options'}",
                    candidates=accepted,
                    near=key,
                )
            )


def _check_reads_text(factory: Callable[..., Any], inputs: ModelInputs, name: str) -> None:
    """Refuses text columns to a factory that would leave them unread."""
    if inputs.text and not getattr(factory, "reads_text", False):
        columns = [feature.source for feature in inputs.text.values()]
        raise ConfigError(
            message(
                f"model={name!r} cannot read the text column(s) {columns}",
                allowed="Use model='transformer' (or 'auto'), or drop the column(s) with "
                "data_options.columns={name: 'drop'}",
            )
        )


def _wrap(model: keras.Model, inputs: ModelInputs) -> keras.Model:
    """Puts the preprocessing in front of a model built on raw inputs."""
    _check_reads_text(lambda: None, inputs, getattr(model, "name", "model"))
    expected = tuple(model.input_shape[1:])
    got = inputs.feature_shape
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ConfigError(
            message(
                f"The model expects inputs of shape {expected} but the data has examples of "
                f"shape {got}",
                allowed="Build the model on inputs of the data's shape, or pass a factory, "
                "which is given the shape",
            )
        )
    return keras.Model(inputs.inputs, model(inputs.features), name=model.name)


def _check_head(model: keras.Model, head: Head) -> None:
    units = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if units != head.units:
        raise ConfigError(
            message(
                f"The model has {units} outputs but the task needs {head.units} "
                f"({head.activation} over {head.units} unit(s))",
                allowed=f"End the model with a layer of {head.units} unit(s)",
            )
        )


def build_model(
    spec: Any, inputs: ModelInputs, head: Head, options: Mapping[str, Any] | None = None
) -> keras.Model:
    """Builds the model that the ``model`` option describes.

    Call it inside the strategy scope: every variable is created here.

    Args:
        spec: A registered name or `"auto"`; a factory callable (taking
            `inputs`/`head` like the built-in ones, or `input_shape` and
            `num_outputs`, or nothing); or a built tf_keras model. A model
            built on raw inputs gets the preprocessing put in front of it.
        inputs: The model inputs and preprocessed features.
        head: The output layer the task needs.
        options: Keyword options of the factory. Defaults to `{}`.

    Returns:
        An uncompiled tf_keras model from raw inputs to outputs.

    Raises:
        ConfigError: For an unknown name or option, a Keras 3 object, or a
            model whose input or output shape does not fit the data.
    """
    options = dict(options or {})
    if isinstance(spec, str):
        factory = factory_for(spec, inputs.feature_shape, text=bool(inputs.text))
        _check_options(factory, options, spec)
        _check_reads_text(factory, inputs, spec)
        model = factory(inputs, head, **options)
    elif isinstance(spec, keras.Model) or hasattr(spec, "layers"):
        ensure_tf_keras(spec, "model")
        if options:
            raise ConfigError(
                message(
                    "model_options apply to factories, not to a built model",
                    received={"model_options": dict(options)},
                    allowed="Drop model_options, or pass a factory name or callable as model",
                )
            )
        model = _wrap(spec, inputs)
    elif callable(spec):
        params = inspect.signature(spec).parameters
        available = {
            "inputs": inputs,
            "head": head,
            "input_shape": inputs.feature_shape,
            "num_outputs": head.units,
            "output_activation": head.activation,
        }
        _check_options(spec, options, getattr(spec, "__name__", "callable"))
        kwargs = {k: v for k, v in available.items() if k in params}
        model = spec(**kwargs, **options)
        ensure_tf_keras(model, "model")
        if not isinstance(model, keras.Model):
            raise ConfigError(
                message(
                    f"The model callable returned a {type(model).__name__}, not a tf_keras.Model",
                    received={"model": getattr(spec, "__name__", "callable")},
                )
            )
        if "inputs" not in params:
            model = _wrap(model, inputs)
    else:
        raise config_error("model", spec, "a factory name, a callable, or a tf_keras model")
    _check_head(model, head)
    return model


def fine_tune_plan(spec: Any, options: Mapping[str, Any] | None = None) -> FineTunePlan | None:
    """The second training phase of the model that ``model=spec`` builds.

    A `transfer` model (named, or the factory itself) trains in two phases:
    the head on the frozen backbone, then the plan's top backbone layers
    unfrozen (the training stage runs it). Every other model trains in one.

    Args:
        spec: The `model` option, as `build_model` takes it.
        options: The factory's keyword options. Defaults to `{}`.

    Returns:
        The `FineTunePlan`, or None when there is no second phase.
    """
    factory = MODELS.get(spec) if isinstance(spec, str) else spec
    if factory is not transfer:
        return None
    plan = FineTunePlan.from_options(options or {})
    return plan if plan.active else None
