"""The machinery shared by every config section: typed fields, checked values.

A section is a dataclass that subclasses :class:`Section`. Its annotations
*are* its schema: ``Literal[...]`` for choices, ``int``/``float``/``bool``/``str``,
``X | None``, ``list[X]``, ``dict[str, Any]`` and nested sections. Numeric
bounds go in the field's metadata through :func:`option`. Every value is
checked when the section is built, from a dict (``Section.from_dict``) or
directly (``TrainConfig(epochs=0)`` raises too), so a bad option never reaches
training.

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from kerastrain.errors import ConfigError, config_error, describe, did_you_mean

__all__ = ["Section", "option"]

S = TypeVar("S", bound="Section")


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with numeric bounds checked on construction.

    Args:
        default: The default value. Defaults to no default.
        default_factory: A factory for mutable defaults. Defaults to none.
        gt: The value must be greater than this. Defaults to no bound.
        ge: The value must be at least this. Defaults to no bound.
        lt: The value must be less than this. Defaults to no bound.
        le: The value must be at most this. Defaults to no bound.

    Returns:
        A ``dataclasses.field``.
    """
    bounds = {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"bounds": bounds}
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        choices = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
        others = [_type_name(a) for a in args if typing.get_origin(a) is not Literal]
        if not choices:
            return " or ".join(others)
        listed = (
            repr(choices[0]) if len(choices) == 1 else "one of " + ", ".join(map(repr, choices))
        )
        return " or ".join([listed, *others])
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "None"
    if tp is Any:
        return "anything"
    if isinstance(tp, type) and issubclass(tp, Section):
        return f"a mapping of {tp.__name__} options"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """Internal: the value does not fit this branch of a type."""


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Checks ``value`` against annotation ``tp`` and returns it normalized.

    Raises _Mismatch for a plain type mismatch (so that unions can try the
    next branch) and ConfigError for a definite error inside a nested section.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if (
            value in typing.get_args(tp)
            and not isinstance(value, bool)
            or (isinstance(value, bool) and any(a is value for a in typing.get_args(tp)))
        ):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # Try exact-type branches first so that 1 stays an int in `int | float`.
        for arg in args:
            try:
                return _coerce(value, arg, path)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if not args:
            return list(value)
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_coerce(item, args[0], f"{path}[{i}]"))
            except _Mismatch:
                raise config_error(
                    f"{path}[{i}]", item, _type_name(args[0]), typing.get_args(args[0])
                ) from None
        return items
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_dict(value, path)
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def _check_bounds(value: Any, bounds: Mapping[str, float], path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    checks = {
        "gt": (lambda v, b: v > b, "> {}"),
        "ge": (lambda v, b: v >= b, ">= {}"),
        "lt": (lambda v, b: v < b, "< {}"),
        "le": (lambda v, b: v <= b, "<= {}"),
    }
    failed = [
        fmt.format(b)
        for name, b in bounds.items()
        for ok, fmt in [checks[name]]
        if not ok(value, b)
    ]
    if failed:
        expected = " and ".join(
            fmt.format(b) for name, b in bounds.items() for _, fmt in [checks[name]]
        )
        raise config_error(path, value, expected)


class Section:
    """Base of every config section (a dataclass).

    Subclasses are ``@dataclasses.dataclass`` classes. Construction checks each
    field against its annotation and bounds, then calls :meth:`validate` for
    checks that involve several fields.

    Attributes:
        _path: The dotted name of the section in the whole config, used in
            messages (``"train"``). Set by the subclass as a class attribute.
    """

    _path: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            path = self._field_path(f.name)
            value = getattr(self, f.name)
            tp = hints[f.name]
            try:
                value = _coerce(value, tp, path)
            except _Mismatch:
                candidates = (
                    typing.get_args(tp)
                    if typing.get_origin(tp) is Literal
                    else [
                        a
                        for arg in typing.get_args(tp)
                        if typing.get_origin(arg) is Literal
                        for a in typing.get_args(arg)
                    ]
                )
                raise config_error(path, value, _type_name(tp), candidates) from None
            _check_bounds(value, f.metadata.get("bounds", {}), path)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in sections that need them."""

    @classmethod
    def _field_path(cls, name: str) -> str:
        return f"{cls._path}.{name}" if cls._path else name

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any] | S | None, path: str | None = None) -> S:
        """Builds the section from a mapping, refusing unknown keys.

        Args:
            data: A mapping of option names to values, an instance (returned
                as is), or None for all defaults.
            path: The section's name in messages. Defaults to the class's.

        Returns:
            The checked section.

        Raises:
            ConfigError: For an unknown key (with a suggestion) or a bad value.
        """
        if data is None:
            return cls()
        if isinstance(data, cls):
            return data
        where = path if path is not None else cls._path
        if not isinstance(data, Mapping):
            raise config_error(where or cls.__name__, data, f"a mapping of {cls.__name__} options")
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        for key in data:
            if key not in names:
                full = f"{where}.{key}" if where else str(key)
                raise ConfigError(
                    f"Unknown option {full!r}. The {where or 'top-level'} options are: "
                    f"{', '.join(names)}." + did_you_mean(key, names)
                )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready mapping of every option (nested sections too)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.init:
                out[f.name] = _plain(getattr(self, f.name))
        return out

    def replace(self: S, **changes: Any) -> S:
        """A copy with some options changed, checked like a new section."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return describe(value)
