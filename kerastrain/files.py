"""Writing files so that a reader never sees half of one.

Every file or folder kerastrain writes for the user goes through
:func:`atomic_path` (or its shorthands :func:`atomic_write` and
:func:`write_json`): the content is written under a temporary name beside the
final one and renamed into place only once complete, so a crash, a kill or an
exception leaves the old file (or nothing) under the final name, never a
truncated one. This module imports nothing of TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "write_json", "remove", "TEMPORARY_PREFIX"]

#: Temporary files and folders start with this; a finished run has none left.
TEMPORARY_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it into place on success.

    The temporary name is unique (two writers never share it) and keeps the
    final name's suffix (tf_keras picks the save format from it). An existing
    file or folder at ``final`` is replaced only once the new one is complete;
    on an exception the temporary is removed and ``final`` is left as it was.

    Args:
        final: The path the file or folder ends up at.

    Yields:
        The temporary path to write to.

    Raises:
        FileNotFoundError: Nothing was written at the temporary path.

    Example:
        >>> with atomic_path(tmp_dir / "a.txt") as p:  # doctest: +SKIP
        ...     p.write_text("done")
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written for {final}.")
        if tmp.is_dir():
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)  # atomic for files, whatever stands at final
    except BaseException:
        remove(tmp)
        raise


def _replace_folder(tmp: Path, final: Path) -> None:
    """Puts the folder ``tmp`` at ``final``: a folder cannot be renamed onto a
    non-empty one, so the old one is moved aside first and removed after."""
    old = final.with_name(f".old-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        os.replace(final, old)
    except FileNotFoundError:
        old = None  # nothing there, or another writer moved it first
    os.replace(tmp, final)
    if old is not None:
        remove(old)


def atomic_write(path: str | os.PathLike, content: str | bytes) -> Path:
    """Writes ``content`` (text as UTF-8, or bytes) to ``path`` atomically.

    Args:
        path: The file to write.
        content: What it holds.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Writes ``value`` as indented JSON to ``path`` atomically.

    Values JSON does not know (paths, NumPy scalars) are written as strings.

    Args:
        path: The file to write.
        value: What it holds.

    Returns:
        ``path`` as a ``Path``.
    """
    return atomic_write(path, json.dumps(value, indent=2, sort_keys=False, default=str))


def remove(path: str | os.PathLike) -> None:
    """Removes a file or a folder tree; a missing path is not an error."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
