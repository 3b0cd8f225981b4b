"""MkDocs hooks: the pages generated at build time, from the code itself.

- ``yaml.md``, the YAML reference, is `kerastrain.config.reference.markdown`:
  every option of every config section, with its type, default, bounds and
  the text of its ``Attributes:`` docstring entry. An option without an entry
  fails the build (`kerastrain.config.reference.undocumented`).
- ``cli.md``, the command line, is read off the argparse parser of
  `kerastrain.cli`: each command's description, usage and arguments.

Nothing generated is checked in: the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

# The checkout being built, not whichever kerastrain is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kerastrain import cli  # noqa: E402
from kerastrain.config import reference  # noqa: E402

#: Width the usage lines are wrapped at.
USAGE_WIDTH = 88


def on_config(config):  # noqa: ANN001, ANN201 - MkDocs's hook signature
    """Fails the build on a config option without an ``Attributes:`` entry."""
    missing = reference.undocumented()
    if missing:
        raise PluginError(
            "Config options without an entry in their section's 'Attributes:' docstring "
            "(the YAML reference is built from those entries): " + ", ".join(missing)
        )
    return config


def on_files(files: Files, config) -> Files:  # noqa: ANN001 - MkDocs's hook signature
    """Adds the generated pages."""
    files.append(File.generated(config, "yaml.md", content=reference.markdown()))
    files.append(File.generated(config, "cli.md", content=cli_markdown()))
    return files


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _usage(parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(USAGE_WIDTH)
    try:
        return parser.format_usage().strip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {action.metavar or action.dest.upper()}"
        else:
            name = action.metavar or action.dest
        rows.append(f"| `{name}` | {_help(action, parser.prog)} |")
    if not rows:
        return []
    return ["| Argument | What it does |", "| --- | --- |", *rows, ""]


def cli_markdown() -> str:
    """The command-line page, from `kerastrain.cli`'s parser."""
    parser = cli._parser()
    lines = [
        "# Command line",
        "",
        "Generated at build time from the argparse parser of `kerastrain/cli.py`, so it",
        "says what `kerastrain COMMAND --help` says. A bad config or bad data prints one",
        "paragraph and exits with code 2; a run that fails (training diverged, a budget",
        "not met) exits with code 1.",
        "",
        parser.description or "",
        "",
        "```",
        _usage(parser),
        "```",
        "",
        *_arguments(parser),
    ]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    for name, sub in commands.choices.items():
        lines += [f"## `kerastrain {name}`", "", helps.get(name) or "", ""]
        if sub.description:
            lines += [sub.description.replace("<", "&lt;"), ""]
        lines += ["```", _usage(sub), "```", "", *_arguments(sub)]
    return "\n".join(lines)
