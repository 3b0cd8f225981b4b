"""The YAML reference, read off the config sections themselves.

Every option of every section is a dataclass field: its type, default and
bounds come from the field, its description from the entry of the same name
in the ``Attributes:`` block of the section's docstring (or of a section it
inherits the field from). `reference` gathers them, `undocumented` lists the
options without an entry (the documentation build and a unit test fail on
any), and `markdown` writes the reference page the documentation site shows.
One source, so the page cannot drift from the code.

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import typing
from collections.abc import Iterator
from typing import Any

import kerastrain.config
from kerastrain.config.base import Section, _section_in, _type_name

__all__ = [
    "Option",
    "SectionDoc",
    "attributes",
    "all_sections",
    "reference",
    "undocumented",
    "markdown",
]

_HEADER = re.compile(r"^(\s*)Attributes:\s*$")
_ENTRY = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s?(.*)$")
_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a section, as the reference shows it.

    Attributes:
        key: The option's name.
        type: Its type in words (``"an integer"``, ``"one of 'a', 'b'"``).
        default: Its default, as YAML would write it (`None` when it has none).
        bounds: Its numeric bounds in words (``"> 0 and <= 1"``), or ``""``.
        text: The text of its ``Attributes:`` entry, or ``""`` when it has none.
        section: The path of the section it holds (nested options), or ``""``.
        chosen_by: For an option whose section another option picks, that
            option and the section of each of its values.
    """

    key: str
    type: str
    default: str | None
    bounds: str
    text: str
    section: str = ""
    chosen_by: tuple[str, tuple[tuple[str, str], ...]] | None = None


@dataclasses.dataclass(frozen=True)
class SectionDoc:
    """One section of the reference.

    Attributes:
        path: Where its options go in a config (``"train.warmup"``; ``""``
            for the top level).
        name: The class (``"WarmupConfig"``).
        summary: The first paragraph of its docstring.
        options: Its options, in field order.
    """

    path: str
    name: str
    summary: str
    options: tuple[Option, ...]


def attributes(cls: type) -> dict[str, str]:
    """The entries of the ``Attributes:`` block of a class's own docstring.

    Google style: an entry is ``name: text`` one level under the header, its
    text going on over the lines indented deeper; the block ends at a line
    indented no deeper than the header.

    Args:
        cls: The class.

    Returns:
        Each entry's text (joined into one line) by name.
    """
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    entries: dict[str, list[str]] = {}
    header: int | None = None
    entry_indent: int | None = None
    current: list[str] | None = None
    for line in doc.splitlines():
        if header is None:
            match = _HEADER.match(line)
            if match:
                header = len(match.group(1))
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header:
            header, entry_indent, current = None, None, None
            continue
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent:
            match = _ENTRY.match(line.strip())
            current = entries.setdefault(match.group(1), []) if match else None
            if current is not None:
                current.append(match.group(2))
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(part for part in text if part) for name, text in entries.items()}


def documented(cls: type[Section]) -> dict[str, str]:
    """The ``Attributes:`` entries of a section and of the sections it inherits from
    (its own first)."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, Section) and klass is not Section:
            for name, text in attributes(klass).items():
                found.setdefault(name, text)
    return found


def _load_config_modules() -> None:
    for module in pkgutil.iter_modules(kerastrain.config.__path__):
        importlib.import_module(f"kerastrain.config.{module.name}")


def all_sections(within: str = "kerastrain") -> list[type[Section]]:
    """Every section class (each subclass of `Section`, however deep) defined in
    the package `within`, once the modules of `kerastrain.config` are
    imported; sorted by path, then name.

    Args:
        within: The package whose sections count (a test's own sections are
            left out). Defaults to `"kerastrain"`; `""` takes every one.
    """
    _load_config_modules()
    seen: list[type[Section]] = []
    stack = list(Section.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    if within:
        seen = [c for c in seen if c.__module__ == within or c.__module__.startswith(within + ".")]
    return sorted(seen, key=lambda c: (c._path, c.__name__))


def _fields(cls: type[Section]) -> Iterator[dataclasses.Field]:
    if not dataclasses.is_dataclass(cls):
        return iter(())
    return (f for f in dataclasses.fields(cls) if f.init)


def undocumented(within: str = "kerastrain") -> list[str]:
    """Every option without an ``Attributes:`` entry, as ``"Class.option (path)"``.

    Args:
        within: The package whose sections are checked. Defaults to
            `"kerastrain"`.
    """
    missing = []
    for cls in all_sections(within):
        entries = documented(cls)
        for f in _fields(cls):
            if f.name not in entries:
                where = f"{cls._path}.{f.name}" if cls._path else f.name
                missing.append(f"{cls.__name__}.{f.name} ({where})")
    return missing


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return str(value).lower()
    if isinstance(value, Section):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _default(f: dataclasses.Field) -> str | None:
    if f.default is not dataclasses.MISSING:
        return _yaml(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return _yaml(f.default_factory())
    return None


def _bounds(f: dataclasses.Field) -> str:
    bounds = f.metadata.get("bounds", {})
    return " and ".join(f"{_SYMBOLS[name]} {value:g}" for name, value in bounds.items())


def _summary(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return " ".join(doc.split("\n\n")[0].split())


def reference(within: str = "kerastrain") -> list[SectionDoc]:
    """The whole YAML reference, in path order: every section with options, except
    a base that only lends its options to the sections built on it
    (`LayerSelection`); those show them.

    Args:
        within: The package whose sections are shown. Defaults to
            `"kerastrain"`.
    """
    docs = []
    for cls in all_sections(within):
        fields = list(_fields(cls))
        if not fields or cls.__subclasses__():
            continue
        hints = typing.get_type_hints(cls)
        entries = documented(cls)
        options = []
        for f in fields:
            chosen = f.metadata.get("chosen_by")
            nested = None if chosen else _section_in(hints[f.name])
            options.append(
                Option(
                    key=f.name,
                    type=_type_name(hints[f.name]),
                    default=_default(f),
                    bounds=_bounds(f),
                    text=entries.get(f.name, ""),
                    section=nested._path if nested is not None else "",
                    chosen_by=(
                        (chosen[0], tuple((str(k), v.__name__) for k, v in chosen[1].items()))
                        if chosen
                        else None
                    ),
                )
            )
        docs.append(SectionDoc(cls._path, cls.__name__, _summary(cls), tuple(options)))
    return docs


def _anchor(name: str) -> str:
    return name.lower()


def markdown() -> str:
    """The YAML reference page (Markdown): a heading per section, one entry per option."""
    sections = reference()
    names = {s.name for s in sections}
    lines = [
        "# YAML reference",
        "",
        "Every option of a config file (or keyword of `fit_pipeline`), generated at build",
        "time from the config sections in `kerastrain/config/`: the type, default and",
        "bounds from the dataclass fields, the text from each section's `Attributes:`",
        "docstring. A section's options go under its path (`train:` then `warmup:` for",
        "`train.warmup`). Sections that share a path (the options of each learning-rate",
        "schedule, each kind of `tune.space` entry) are the alternatives of one option.",
        "",
    ]
    for doc in sections:
        title = f"`{doc.path}`" if doc.path else "Top level"
        lines += [f"## {title}: {doc.name} {{ #{_anchor(doc.name)} }}", "", doc.summary, ""]
        for opt in doc.options:
            facts = [opt.type]
            if opt.default is not None:
                facts.append(f"default `{opt.default}`")
            else:
                facts.append("required")
            if opt.bounds:
                facts.append(opt.bounds)
            lines += [f"### `{opt.key}` {{ #{_anchor(doc.name)}-{opt.key} }}", ""]
            lines += [" · ".join(facts), ""]
            if opt.chosen_by:
                by, choices = opt.chosen_by
                picks = ", ".join(
                    f"`{value}`: [{name}](#{_anchor(name)})" if name in names else f"`{value}`"
                    for value, name in choices
                )
                lines += [f"The section is chosen by `{by}`: {picks}.", ""]
            elif opt.section:
                nested = next(
                    (s.name for s in sections if s.path == opt.section and s.name in names), None
                )
                if nested:
                    lines += [f"Its options: [{nested}](#{_anchor(nested)}).", ""]
            lines += [_linked(opt.text, names), ""]
    return "\n".join(lines)


def _linked(text: str, names: set[str]) -> str:
    """``text`` with each mention of a section class linked to its entry, and
    a ``<`` outside code written as text (not read as an HTML tag)."""
    parts = re.split(r"(``.*?``|`[^`]*`)", text)
    return "".join(
        (
            f"[{part}](#{_anchor(part.strip('`'))})"
            if part.strip("`") in names and re.fullmatch(r"`\w+`", part)
            else part
        )
        if part.startswith("`")
        else part.replace("<", "&lt;")
        for part in parts
    )
