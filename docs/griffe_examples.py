"""A griffe extension: kerastrain's ``Example:`` docstring sections are examples.

Google style allows both ``Example:`` and ``Examples:``; kerastrain writes the
first, which griffe reads as a plain admonition, so its ``>>>`` lines would be
rendered as Markdown (quotes, and ``x["a"]["b"]`` as a broken link). Renamed
``Examples:`` before parsing, they are shown as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Reads each ``Example:`` section as ``Examples:``."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
