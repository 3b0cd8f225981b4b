"""The machinery shared by every config section: typed fields, checked values.

A section is a dataclass that subclasses :class:`Section`. Its annotations
*are* its schema: ``Literal[...]`` for choices, ``int``/``float``/``bool``/``str``,
``X | None``, ``list[X]``, ``dict[str, Any]`` and nested sections. Numeric
bounds go in the field's metadata through :func:`option`, and so does a
section chosen by another field (``train.schedule_options`` is the options
section of the chosen ``train.schedule``). Every value is checked when the
section is built, from a dict (``Section.from_dict``) or directly
(``TrainConfig(epochs=0)`` raises too), so a bad option never reaches
training. Every number, in any option (in its lists and mappings too), must be
finite: NaN and infinity are refused naming the option. Building never
changes a section the caller passed in: a section that needs another value is
a new one.

A section may list options it renamed (``_moved``): for one release the old
key is still accepted, moved to its new place with a `DeprecationWarning`
that names the new key.

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from kerastrain.errors import ConfigError, config_error, describe, did_you_mean

__all__ = ["Section", "option", "warn_renamed", "number_as_text"]

S = TypeVar("S", bound="Section")


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    chosen_by: str | None = None,
    sections: Mapping[Any, type[Section]] | None = None,
) -> Any:
    """A dataclass field with numeric bounds checked on construction.

    Args:
        default: The default value. Defaults to no default.
        default_factory: A factory for mutable defaults. Defaults to none.
        gt: The value must be greater than this. Defaults to no bound.
        ge: The value must be at least this. Defaults to no bound.
        lt: The value must be less than this. Defaults to no bound.
        le: The value must be at most this. Defaults to no bound.
        chosen_by: The name of an earlier field whose value picks, in
            `sections`, the section this field holds (given as a mapping
            of its options). Defaults to none.
        sections: The section of each value of `chosen_by`. Defaults to none.

    Returns:
        A ``dataclasses.field``.
    """
    bounds = {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}
    metadata: dict[str, Any] = {"bounds": bounds}
    if chosen_by is not None:
        metadata["chosen_by"] = (chosen_by, dict(sections or {}))
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


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
            try:
                return float(value)
            except OverflowError:  # an int beyond float's range (10**400)
                raise config_error(path, value, "a finite number") from None
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


def number_as_text(value: Any) -> str:
    """A hint for a number that arrived as text, else an empty string.

    YAML (1.1, PyYAML's) reads ``1e-3`` as a string: its numbers in
    e-notation need a decimal point and a signed exponent (``1.0e-3``).
    """
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    mantissa, e, exponent = value.strip().lower().partition("e")
    if e and "." not in mantissa:
        sign = "" if exponent.startswith(("+", "-")) else "+"
        return (
            f" (it is text: YAML reads {value} as a string; write {mantissa}.0e{sign}{exponent}, "
            "with a decimal point and a signed exponent)"
        )
    return " (it is text: write the number without quotes)"


def _admits_number(tp: Any) -> bool:
    if tp in (int, float):
        return True
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_admits_number(arg) for arg in typing.get_args(tp))
    return False


def _holds_containers(tp: Any) -> bool:
    """Whether an annotation admits a list or a mapping of options (``list[float]``,
    ``dict[str, Any]``, in a union too), whose items are options as well; a
    value an ``Any`` admits (the data itself) is not looked into."""
    if tp in (list, tuple, dict) or typing.get_origin(tp) in (list, tuple, dict):
        return True
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_holds_containers(arg) for arg in typing.get_args(tp))
    return False


def _check_finite(value: Any, path: str, *, items: bool = True) -> None:
    """Refuses a NaN or infinite number as an option's value, whatever its
    annotation (``float``, ``Any``), and, when `items`, in its lists and
    mappings too (a ``dict`` of optimizer options). Nested sections check
    their own options."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if not math.isfinite(value):
            raise config_error(path, value, "a finite number")
    elif not items or isinstance(value, Section):
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


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


def _section_in(tp: Any) -> type[Section] | None:
    """The section class an annotation holds (``X | None`` included), if any."""
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, Section):
                return arg
    return None


def _internal(module: str) -> bool:
    return module == "kerastrain" or module.startswith("kerastrain.") or module == "dataclasses"


def _caller_stacklevel() -> int:
    """The `stacklevel` of a warning raised by the caller of this function
    that points at the first frame outside kerastrain, so that Python shows
    a `DeprecationWarning` to the author of the script that gave the option."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _internal(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    return level


def warn_renamed(old: str, new: str) -> None:
    """Warns that the option ``old`` was renamed ``new`` (a `DeprecationWarning`
    pointing at the caller outside kerastrain). The old key is read until the
    next release."""
    warnings.warn(
        f"{old} is deprecated: use {new} (the old key is read until the next release).",
        DeprecationWarning,
        stacklevel=_caller_stacklevel(),
    )


def _unknown_option(key: Any, where: str, names: list[str], context: str = "") -> ConfigError:
    full = f"{where}.{key}" if where else str(key)
    return ConfigError(
        f"Unknown option {full!r}{f' for {context}' if context else ''}. The "
        f"{where or 'top-level'} options are: {', '.join(names) or 'none'}."
        + did_you_mean(key, names)
    )


class _SectionType(type):
    """The type of every section: building one by keyword (``TrainConfig(...)``,
    ``dataclasses.replace``) moves its renamed options and checks its
    required ones, exactly as `Section.from_dict` does."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._build(cls._path, args, kwargs)


class Section(metaclass=_SectionType):
    """Base of every config section (a dataclass).

    Subclasses are ``@dataclasses.dataclass`` classes. Construction checks each
    field against its annotation and bounds, then calls :meth:`validate` for
    checks that involve several fields.

    Attributes:
        _path: The dotted name of the section in the whole config, used in
            messages (``"train"``). Set by the subclass as a class attribute;
            a section built by `from_dict` with another path (a tuning-space
            entry, ``tune.space.<name>``) keeps that one.
        _moved: Renamed options, old key to new dotted key inside this
            section (``{"warmup_epochs": "warmup.epochs"}``). For one release
            an old key is still accepted, by keyword or in a mapping, and
            moved to its new place with a `DeprecationWarning`.
    """

    _path: typing.ClassVar[str] = ""
    _moved: typing.ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            path = self._field_path(f.name)
            value = getattr(self, f.name)
            if "chosen_by" in f.metadata:
                value = self._chosen(f.name, value, *f.metadata["chosen_by"])
                object.__setattr__(self, f.name, value)
                continue
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
                hint = number_as_text(value) if _admits_number(tp) else ""
                raise config_error(path, value, _type_name(tp) + hint, candidates) from None
            _check_finite(value, path, items=_holds_containers(tp))
            _check_bounds(value, f.metadata.get("bounds", {}), path)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in sections that need them.

        It may normalize this section's own fields (it is still being
        built), never a section or mapping it was given: a changed nested
        section is a new one (`replace`).
        """

    def _field_path(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _chosen(
        self, name: str, value: Any, chooser: str, sections: Mapping[Any, type[Section]]
    ) -> Section:
        """The section of field ``name`` that the earlier field ``chooser`` picks."""
        choice = getattr(self, chooser)
        section = sections[choice]
        if isinstance(value, Section) and not isinstance(value, section):
            value = value._non_defaults()  # another choice's options: keep those set
        return section.from_dict(value, self._field_path(name), context=f"{chooser} {choice!r}")

    @classmethod
    def _init_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def _build(cls: type[S], path: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> S:
        """Builds the section named ``path`` from ``args`` and ``kwargs``."""
        options = cls._move_renamed(dict(kwargs), path)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        positional = {f.name for f in fields[: len(args)]}
        for f in fields:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in options and f.name not in positional:
                raise ConfigError(
                    f"The section {path or cls.__name__!r} needs {f.name!r}, which has no default."
                )
        section = cls.__new__(cls)
        if path != cls._path:
            object.__setattr__(section, "_path", path)
        section.__init__(*args, **options)
        return section

    @classmethod
    def _move_renamed(cls, options: dict[str, Any], path: str) -> dict[str, Any]:
        """Moves renamed options of ``options`` to their new keys, warning once each.

        A moved option whose section is off (``ema: false``) is dropped: the
        old flat option did nothing then either.
        """
        prefix = f"{path}." if path else ""
        moves: dict[str, dict[str, Any]] = {}
        for old, new in cls._moved.items():
            if old in options:
                section, _, key = new.partition(".")
                warn_renamed(f"{prefix}{old}", f"{prefix}{new}")
                inner = moves.setdefault(section, {})
                inner[key] = options.pop(old)
        for section, values in moves.items():
            if section in options:
                current = options[section]
            else:
                f = cls.__dataclass_fields__[section]
                current = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if current is None or current is False:
                continue
            if current is True:
                current = {}
            if isinstance(current, Section):
                current = current.replace(**values)
            elif isinstance(current, Mapping):
                for key in values:
                    if key in current:
                        old = next(o for o, n in cls._moved.items() if n == f"{section}.{key}")
                        raise ConfigError(
                            f"Both {prefix}{old} and {prefix}{section}.{key} were given; "
                            f"set only {prefix}{section}.{key}."
                        )
                current = {**current, **values}
            else:
                continue  # not a section: its own check names the bad value
            options[section] = current
        return options

    @classmethod
    def from_dict(
        cls: type[S],
        data: Mapping[str, Any] | S | None,
        path: str | None = None,
        context: str = "",
    ) -> S:
        """Builds the section from a mapping, refusing unknown keys.

        Args:
            data: A mapping of option names to values, an instance (returned
                as is), or None for all defaults.
            path: The section's name in messages. Defaults to the class's.
            context: What chose this section, for messages (``"schedule
                'step'"``). Defaults to none.

        Returns:
            The checked section.

        Raises:
            ConfigError: For an unknown key (with a suggestion) or a bad value.
        """
        if isinstance(data, cls):
            return data
        where = path if path is not None else cls._path
        if data is None:
            return cls._build(where, (), {})
        if not isinstance(data, Mapping):
            raise config_error(where or cls.__name__, data, f"a mapping of {cls.__name__} options")
        names = cls._init_names()
        for key in data:
            if key not in names and key not in cls._moved:
                raise _unknown_option(key, where, names, context)
        return cls._build(where, (), data)

    @classmethod
    def merged(cls, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
        """The options ``old`` updated key by key with ``new``.

        An option that is a section merges key by key too (a section object
        counts as the mapping of its options); any other value, and a section
        chosen by another option (``train.schedule_options``), is replaced.
        """
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        merged = dict(old)
        for key, value in new.items():
            before = merged.get(key)
            f = fields.get(key)
            nested = _section_in(hints[key]) if f and "chosen_by" not in f.metadata else None
            if isinstance(before, Section):
                before = before.option_values()
            if nested is not None and isinstance(value, Mapping) and isinstance(before, Mapping):
                merged[key] = nested.merged(before, value)
            else:
                merged[key] = value
        return merged

    def option_values(self) -> dict[str, Any]:
        """Each option's value by name, nested sections as they are."""
        return {name: getattr(self, name) for name in self._init_names()}

    def _non_defaults(self) -> dict[str, Any]:
        """The options set to something other than their defaults."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if value != default:
                out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready mapping of every option (nested sections too)."""
        return {name: _plain(value) for name, value in self.option_values().items()}

    def replace(self: S, **changes: Any) -> S:
        """A copy with some options changed, checked like a new section.

        The section itself is not changed. A dotted name changes an option
        of a nested section: ``train.replace(**{"warmup.epochs": 2})``.

        Raises:
            ConfigError: For an unknown option or a bad value.
        """
        names = self._init_names()
        nested: dict[str, dict[str, Any]] = {}
        for key in list(changes):
            head, dot, rest = key.partition(".")
            if dot:
                nested.setdefault(head, {})[rest] = changes.pop(key)
        for key in [*nested, *changes]:
            if key not in names and key not in self._moved:
                raise _unknown_option(key, self._path, names)
        for head, inner in nested.items():
            current = changes.get(head, getattr(self, head))
            if not isinstance(current, Section):
                raise config_error(
                    self._field_path(head),
                    current,
                    f"a section with the options {', '.join(map(repr, inner))} to change",
                )
            changes[head] = current.replace(**inner)
        return type(self)._build(self._path, (), {**self.option_values(), **changes})


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
