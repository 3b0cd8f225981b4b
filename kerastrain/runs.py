"""The run folder: where a run's artifacts, config, metrics and report live.

A ``run.json`` marker records the run's state. A folder whose run finished is
never written over unless ``overwrite=True``; a folder whose run did not
finish is picked up again (its training backup lets the fit resume).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from kerastrain.errors import ConfigError
from kerastrain.files import write_json

logger = logging.getLogger(__name__)

__all__ = ["RunFolder"]

MARKER = "run.json"


class RunFolder:
    """A run's folder and its state marker.

    Args:
        path: The folder.
    """

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def prepare(cls, output_dir: str | None, name: str, overwrite: bool) -> RunFolder:
        """Opens (creating if needed) the run folder.

        Raises:
            ConfigError: When the folder holds a finished run and `overwrite`
                is False.
        """
        path = cls.location(output_dir, name)
        if cls.check(path, overwrite) not in (None, "finished"):
            logger.info("Resuming the unfinished run in %s.", path)
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path)
        folder.mark("running")
        return folder

    @staticmethod
    def check(path: Path, overwrite: bool) -> str | None:
        """The state of the run in ``path`` (None when there is none).

        Raises:
            ConfigError: When it finished and `overwrite` is False.
        """
        marker = path / MARKER
        if not marker.exists():
            return None
        state = json.loads(marker.read_text()).get("status")
        if state == "finished" and not overwrite:
            raise ConfigError(
                f"The output_dir {str(path)!r} holds a finished run; it is not overwritten. "
                "Pass overwrite=True to replace it, or choose another output_dir."
            )
        return state

    @staticmethod
    def location(output_dir: str | None, name: str) -> Path:
        """The run folder's path: `output_dir`, else `saved_models/<name>`."""
        return Path(output_dir) if output_dir else Path("saved_models") / name

    @property
    def backup_dir(self) -> Path:
        """The training backup (`BackupAndRestore`) of this run."""
        return self.path / "backup"

    @property
    def resuming(self) -> bool:
        return self.backup_dir.exists() and any(self.backup_dir.iterdir())

    def mark(self, status: str, **extra: Any) -> None:
        write_json(
            self.path / MARKER,
            {
                "status": status,
                "updated": _dt.datetime.now().isoformat(timespec="seconds"),
                **extra,
            },
        )

    @staticmethod
    def default_name(model: Any) -> str:
        label = (
            model
            if isinstance(model, str)
            else getattr(model, "__name__", None) or getattr(model, "name", None) or "model"
        )
        return f"{label}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
