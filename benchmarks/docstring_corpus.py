"""Unlabelled text for pretraining a language model on the docstring task.

Docstrings of installed packages that are not the task's libraries (numpy,
pandas, scikit-learn, SciPy), read from their source with `ast` (nothing is
imported), and Python's help topics (`pydoc_data.topics`), each cut to the
task's 600 characters. Any text equal to a held-out docstring, or holding one,
is left out, and the set is deduplicated.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import sysconfig
from collections.abc import Iterable
from pathlib import Path

#: Packages whose docstrings are read (not the task's libraries).
PACKAGES = ("tf_keras", "matplotlib", "keras_tuner", "h5py", "PIL")
MAX_CHARS = 600


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _docstrings(root: Path) -> Iterable[str]:
    for file in sorted(root.rglob("*.py")):
        if any(part in ("tests", "test", "testing") or part.endswith("_test.py")
               for part in file.relative_to(root).parts):  # fmt: skip
            continue
        yield from _docstrings_file(file)


def corpus(held_out: Iterable[str], limit: int, seed: int = 0) -> tuple[list[str], dict]:
    """Up to ``limit`` texts (seeded sample) and what they hold, by source."""
    held = set(held_out)
    found: dict[str, str] = {}
    roots = {name: _package_dir(name) for name in PACKAGES}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = {**{k: v for k, v in roots.items() if v}, "stdlib": stdlib}
    for name, root in sources.items():
        if name == "stdlib":
            texts = (d for f in sorted(root.glob("*.py")) for d in _docstrings_file(f))
        else:
            texts = _docstrings(root)
        for text in texts:
            found.setdefault(text, name)
    from pydoc_data.topics import topics

    for text in topics.values():
        for start in range(0, len(text), MAX_CHARS):
            found.setdefault(text[start : start + MAX_CHARS], "pydoc topics")
    kept = {t: s for t, s in found.items() if t not in held and not any(h in t for h in held)}
    items = sorted(kept.items())
    random.Random(seed).shuffle(items)
    items = items[:limit]
    counts: dict[str, int] = {}
    for _, source in items:
        counts[source] = counts.get(source, 0) + 1
    facts = {
        "found": len(found),
        "dropped_as_held_out": len(found) - len(kept),
        "kept": len(items),
        "characters": sum(len(t) for t, _ in items),
        "by_source": counts,
    }
    return [t for t, _ in items], facts


def _docstrings_file(file: Path) -> Iterable[str]:
    try:
        tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                yield doc[:MAX_CHARS]
