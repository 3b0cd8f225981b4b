"""The run folder: where a run's artifacts, config, metrics and report live.

A ``run.json`` marker records the run's state. A folder whose run finished is
never written over unless ``overwrite=True``; a folder whose run did not
finish is picked up again (its training backup lets the fit resume).

Under a cluster of workers only the chief writes the run folder; the others
write to temporary folders that are removed (:func:`open_run_folder`, told
which process this is by a plain `ProcessRole`, so this module needs no
TensorFlow: `kerastrain.distribute.process_role` builds one from a strategy).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kerastrain.errors import ConfigError, message
from kerastrain.files import remove, write_json

if TYPE_CHECKING:
    from kerastrain.config import PipelineConfig

logger = logging.getLogger(__name__)

__all__ = [
    "RunFolder",
    "WorkerRunFolder",
    "ProcessRole",
    "open_run_folder",
    "recorded_seed",
    "run_seed",
]

MARKER = "run.json"
CONFIG = "config.yaml"


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
                message(
                    f"The output_dir {str(path)!r} holds a finished run; it is not overwritten",
                    received={"overwrite": overwrite},
                    allowed="Pass overwrite=True to replace it, or choose another output_dir",
                )
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


class WorkerRunFolder(RunFolder):
    """A non-chief worker's run folder: a temporary folder, removed at the end.

    Every worker of a multi-worker run must take the same steps (`predict`
    gathers outputs across workers; TensorFlow's guide has every worker save
    the model, the others to temporary paths), so non-chief workers write
    their artifacts too, here, where nobody reads them. The training backup
    is the chief's: every worker must restore the same epoch.

    Args:
        path: The temporary folder.
        shared: The chief's run folder.
    """

    def __init__(self, path: Path, shared: Path):
        super().__init__(path)
        self.shared = shared

    @property
    def backup_dir(self) -> Path:
        return self.shared / "backup"

    def mark(self, status: str, **extra: Any) -> None:
        if status in ("finished", "failed") and self.path.exists():
            remove(self.path)
            logger.info("Removed this worker's temporary folder %s.", self.path)


@dataclasses.dataclass(frozen=True)
class ProcessRole:
    """Where this process stands among the processes that train together.

    Attributes:
        chief: Whether it writes the run's artifacts and reports. Defaults to `True`.
        workers: How many workers train together. Defaults to `1`.
        task: Its task in the cluster, as a folder name (`"worker1"`).
            Defaults to `"worker0"`.
    """

    chief: bool = True
    workers: int = 1
    task: str = "worker0"


def open_run_folder(config: PipelineConfig, role: ProcessRole) -> RunFolder:
    """The run folder this process writes to: the real one on the chief only.

    Args:
        config: The resolved config (`output_dir`, `name`, `overwrite`).
        role: This process's place in the cluster
            (`kerastrain.distribute.process_role(strategy)`).

    Returns:
        A `RunFolder` on the chief; a `WorkerRunFolder` elsewhere.

    Raises:
        ConfigError: When a cluster of several workers has no `output_dir`
            (each worker would name its own folder, and their backups would
            not meet), or the chief finds a finished run (see `RunFolder`).
    """
    if role.workers > 1 and config.output_dir is None:
        raise ConfigError(
            message(
                f"Training on {role.workers} workers needs output_dir set to one folder every "
                "worker reaches (the chief writes there, and every worker restores the same "
                "backup)",
                received={"output_dir": config.output_dir},
                allowed="Set output_dir, and the same seed on every worker too; "
                "`kerastrain launch` sets both",
            )
        )
    if role.chief:
        return RunFolder.prepare(config.output_dir, config.name, config.overwrite)
    path = Path(tempfile.mkdtemp(prefix=f"kerastrain-{role.task}-"))
    logger.info("Not the chief: this worker writes to the temporary folder %s.", path)
    return WorkerRunFolder(path, RunFolder.location(config.output_dir, config.name))


def recorded_seed(path: Path) -> int | None:
    """The seed of the unfinished run in `path`, which a rerun resumes.

    A run that did not finish is picked up again by the next run into its
    folder, and its training backup holds weights trained on the splits its
    seed drew; the rerun must draw the same ones. The seed is read from the
    run's ``config.yaml``.

    Args:
        path: The run folder.

    Returns:
        The recorded seed, or None when the folder holds no unfinished run
        with a readable seed.
    """
    marker, config = path / MARKER, path / CONFIG
    if not marker.exists() or not config.exists():
        return None
    try:
        if json.loads(marker.read_text()).get("status") == "finished":
            return None
        seed = (yaml.safe_load(config.read_text()) or {}).get("seed")
    except (OSError, ValueError, yaml.YAMLError, AttributeError) as exc:
        logger.warning("Could not read the seed of the unfinished run in %s: %s.", path, exc)
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def run_seed(path: Path, seed: int | None, resume: bool = True) -> int:
    """The seed of a run into the folder `path`.

    A rerun into the folder of an unfinished run resumes its backup, so it
    keeps that run's seed (and with it the splits the backup trained on);
    another seed is refused while there is a backup to resume. Otherwise
    `seed`, or a fresh one when it is None.

    Args:
        path: The run folder.
        seed: The seed asked for, or None.
        resume: `train.backup.resume`: whether a backup would be resumed.
            Defaults to `True`.

    Returns:
        The seed.

    Raises:
        ConfigError: When `seed` differs from the unfinished run's and its
            backup would be resumed.
    """
    recorded = recorded_seed(path) if resume else None
    if seed is None:
        if recorded is None:
            return random.SystemRandom().randrange(2**31)
        logger.info("Resuming the unfinished run in %s with its seed, %d.", path, recorded)
        return recorded
    if recorded is not None and recorded != seed and RunFolder(path).resuming:
        raise ConfigError(
            message(
                f"The unfinished run in {str(path)!r} was started with seed={recorded}, and its "
                "training backup is resumed: another seed would draw other splits, and the "
                "resumed model would have trained on rows now held out",
                received={"seed": seed},
                allowed=f"Pass seed={recorded} (or no seed) to resume it, or set "
                "train.backup.resume=false to train again from the start with the new seed",
            )
        )
    return seed
