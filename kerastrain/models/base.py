"""What every model factory receives, and the pieces they share.

A factory is called as ``factory(inputs, head, **options)``: ``inputs`` is the
`kerastrain.data.preprocess.ModelInputs` the data stage builds (the raw
inputs and the preprocessed features), ``head`` the `Head` the task needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kerastrain._keras import keras
from kerastrain.errors import config_error, one_of

__all__ = ["Head", "output_layer", "regularizer", "make_initializer"]

INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "random_normal",
)


@dataclasses.dataclass(frozen=True)
class Head:
    """The output layer the task needs.

    Attributes:
        units: Output units (classes for multi-class, 1 otherwise).
        activation: `"softmax"`, `"sigmoid"` or `"linear"`.
    """

    units: int
    activation: str


def output_layer(head: Head, **kwargs: Any) -> keras.layers.Dense:
    """The output `Dense` layer, always float32 so that mixed precision
    leaves the probabilities (and the loss) in full precision."""
    return keras.layers.Dense(
        head.units, activation=head.activation, dtype="float32", name="output", **kwargs
    )


def regularizer(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    """An L1/L2 weight penalty, or None when both are 0."""
    if l1 < 0 or l2 < 0:
        raise config_error("model_options.l1/l2", (l1, l2), "0 or more")
    if not l1 and not l2:
        return None
    return keras.regularizers.L1L2(l1=l1, l2=l2)


def make_initializer(name: str, seed: int | None = None) -> keras.initializers.Initializer:
    """A named kernel initializer (Glorot, He, LeCun, ...), seeded if asked."""
    if name not in INITIALIZERS:
        raise config_error(
            "model_options.initializer",
            name,
            one_of(INITIALIZERS),
            INITIALIZERS,
        )
    return keras.initializers.get({"class_name": name, "config": {"seed": seed}})


def transfer_head(
    features: Any,
    head: Head,
    *,
    dense: int,
    dropout: float,
    activation: str,
    l1: float,
    l2: float,
    initializer: str,
) -> Any:
    """A transfer model's new head on a backbone's pooled features: dropout,
    an optional `Dense` of ``dense`` units (``head_dense``), then the output
    layer, both with the L1/L2 penalty and the named initializer."""
    reg = regularizer(l1, l2)
    if dropout:
        features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    if dense:
        features = keras.layers.Dense(
            dense,
            activation=activation,
            kernel_regularizer=reg,
            kernel_initializer=make_initializer(initializer),
            name="head_dense",
        )(features)
    return output_layer(
        head, kernel_regularizer=reg, kernel_initializer=make_initializer(initializer)
    )(features)
