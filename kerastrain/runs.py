"""The run folder: where a run's artifacts, config, metrics and report live.

A ``run.json`` marker records the run's state. A folder whose run finished is
never written over unless ``overwrite=True``, and then what the old run wrote
is moved aside and removed before the new run writes anything (files that
were in the folder before its first run are the user's, and kept); a folder
whose run did not finish is picked up again (its training backup lets the fit
resume). Temporary files a killed run left (``.tmp-*``) are removed when the
folder is opened again.

One run at a time: the run holds an exclusive ``fcntl.flock`` on
``run.lock`` inside its folder until it finishes or fails. The operating
system drops the lock when the process dies, however it dies, so a killed
run's folder is resumed by the next run while a second live run into the
same folder is refused with the holder's PID.

Under a cluster of workers only the chief writes the run folder; the others
write to temporary folders that are removed (:func:`open_run_folder`, told
which process this is by a plain `ProcessRole`, so this module needs no
TensorFlow: `kerastrain.distribute.process_role` builds one from a strategy).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import random
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kerastrain.errors import ConfigError, message
from kerastrain.files import TEMPORARY_PREFIX, remove, write_json

if TYPE_CHECKING:
    from kerastrain.config import PipelineConfig

logger = logging.getLogger(__name__)

__all__ = [
    "RunFolder",
    "WorkerRunFolder",
    "ProcessRole",
    "open_run_folder",
    "check_folder",
    "recorded_seed",
    "run_seed",
]

MARKER = "run.json"
CONFIG = "config.yaml"
#: The file a live run holds an exclusive lock on; it records the holder's PID.
LOCK = "run.lock"
#: What the old run wrote is moved into a folder of this prefix, then removed.
OLD_PREFIX = ".old-"
#: The marker's state while an overwrite clears the old run.
CLEARING = "clearing"


class RunFolder:
    """A run's folder and its state marker.

    Args:
        path: The folder.
    """

    def __init__(self, path: Path):
        self.path = path
        self.foreign: list[str] = []
        self._lock: int | None = None

    @classmethod
    def prepare(cls, output_dir: str | None, name: str, overwrite: bool) -> RunFolder:
        """Opens (creating if needed) the run folder and locks it for this run.

        Raises:
            ConfigError: When ``output_dir`` is not a folder that can be
                written, another live run holds it, or it holds a finished
                run and `overwrite` is False.
        """
        path = cls.location(output_dir, name)
        check_folder(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(path, exc) from None
        folder = cls(path)
        folder.lock()
        try:
            state = cls.check(path, overwrite)
            previous = _read_marker(path)
            if state is None:
                # What stands in the folder before the first run is the user's.
                folder.foreign = sorted(set(_entries(path)) - {LOCK})
            else:
                folder.foreign = list(previous.get("foreign", []))
            if state in ("finished", CLEARING):
                folder.clear(previous.get("written"))
            elif state is not None:
                logger.info("Resuming the unfinished run in %s.", path)
            folder.remove_temporaries()
            folder.mark("running")
        except BaseException:
            folder.unlock()
            raise
        return folder

    def lock(self) -> None:
        """Takes the exclusive lock of the folder for this process.

        Raises:
            ConfigError: When another live process holds it (named by PID).
        """
        lock_path = self.path / LOCK
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise _unwritable(self.path, exc) from None
            raise ConfigError(
                message(
                    f"Another kerastrain run (PID {holder}) is writing to the output_dir "
                    f"{str(self.path)!r}; two runs cannot share a folder",
                    received={"output_dir": str(self.path), "lock": str(lock_path)},
                    allowed="Wait for that run to end (or stop it), or choose another "
                    "output_dir; a run that was killed holds no lock and its folder is resumed",
                )
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def unlock(self) -> None:
        """Releases the folder's lock (closing the file drops it)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def clear(self, written: list[str] | None = None) -> None:
        """Removes what the previous run wrote, keeping the lock and the
        files that were in the folder before its first run.

        The marker first says the folder is being cleared (a kill part way
        leaves a folder the next run finishes clearing, never an old run
        mixed with a new one); each entry is moved into one ``.old-*``
        folder with a rename, and that folder is then removed.

        Args:
            written: The entries the old run wrote (its marker's list).
                Defaults to every entry but the user's own (a marker
                without the list).
        """
        self.mark(CLEARING, written=written)
        keep = {LOCK, MARKER, *self.foreign}
        names = written if written is not None else _entries(self.path)
        trash = self.path / f"{OLD_PREFIX}{uuid.uuid4().hex[:8]}"
        trash.mkdir()
        for name in names:
            entry = self.path / name
            if name not in keep and "/" not in name and (entry.exists() or entry.is_symlink()):
                os.replace(entry, trash / name)
        remove(trash)
        logger.info("Overwriting the finished run in %s: removed what it wrote.", self.path)

    def remove_temporaries(self) -> None:
        """Removes the ``.tmp-*`` and ``.old-*`` entries a killed run left in
        the folder and in what it wrote (nobody else writes there while the
        lock is held); the user's own entries are not looked into."""
        stale = [
            p for p in self.path.iterdir() if p.name.startswith((TEMPORARY_PREFIX, OLD_PREFIX))
        ]
        for top in self.path.iterdir():
            if top.is_dir() and not top.is_symlink() and top.name not in self.foreign:
                stale.extend(
                    Path(root) / name
                    for root, dirs, files in os.walk(top)
                    for name in (*dirs, *files)
                    if name.startswith((TEMPORARY_PREFIX, OLD_PREFIX))
                )
        for entry in stale:
            remove(entry)
        if stale:
            logger.info(
                "Removed %d temporary file(s) a stopped run left in %s.", len(stale), self.path
            )

    @staticmethod
    def check(path: Path, overwrite: bool) -> str | None:
        """The state of the run in ``path`` (None when there is none).

        Raises:
            ConfigError: When ``path`` is not a folder, or its run finished
                and `overwrite` is False.
        """
        check_folder(path)
        marker = path / MARKER
        if not marker.exists():
            return None
        try:
            state = json.loads(marker.read_text()).get("status")
        except (ValueError, AttributeError, OSError) as exc:
            # kerastrain writes the marker atomically: this one is not kerastrain's.
            if not overwrite:
                raise ConfigError(
                    message(
                        f"The run marker {str(marker)!r} cannot be read ({exc}), so whether "
                        "the run there finished is unknown; it is not overwritten",
                        received={"overwrite": overwrite},
                        allowed="Pass overwrite=True to replace that folder's run, or choose "
                        "another output_dir",
                    )
                ) from None
            return "finished"
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
        """The run folder's path: `output_dir`, else `saved_models/<name>`.

        Raises:
            ConfigError: When `name` would not name one folder inside
                ``saved_models`` (empty, ``.``, ``..``, a separator or a NUL).
        """
        if output_dir:
            return Path(output_dir)
        if (
            not name
            or name in (".", "..")
            or "\0" in name
            or any(sep and sep in name for sep in (os.sep, os.altsep, "/"))
        ):
            raise ConfigError(
                message(
                    "The run's name must name one folder inside saved_models",
                    received={"name": name},
                    allowed="Give a name without '/' (or set output_dir to the folder)",
                )
            )
        return Path("saved_models") / name

    @property
    def backup_dir(self) -> Path:
        """The training backup (`BackupAndRestore`) of this run."""
        return self.path / "backup"

    @property
    def resuming(self) -> bool:
        return self.backup_dir.exists() and any(self.backup_dir.iterdir())

    def mark(self, status: str, **extra: Any) -> None:
        """Records the run's state; a finished or failed run releases the lock.

        The marker lists the entries that were the user's before the first
        run (``foreign``) and, once finished, those the run wrote
        (``written``): an overwrite removes these only.
        """
        record: dict[str, Any] = {
            "status": status,
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        if self.foreign:
            record["foreign"] = self.foreign
        if status == "finished":
            ours = set(_entries(self.path)) - {LOCK, MARKER, *self.foreign}
            record["written"] = sorted(ours)
        write_json(self.path / MARKER, {**record, **extra})
        if status in ("finished", "failed"):
            self.unlock()

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


def _entries(path: Path) -> list[str]:
    """The names in ``path``, temporaries and the marker left out."""
    return [
        p.name
        for p in path.iterdir()
        if p.name != MARKER and not p.name.startswith((TEMPORARY_PREFIX, OLD_PREFIX))
    ]


def _read_marker(path: Path) -> dict[str, Any]:
    """The marker's record; empty when there is none or it is unreadable."""
    try:
        record = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def check_folder(path: str | os.PathLike) -> None:
    """Refuses an ``output_dir`` that cannot be a run folder, before anything runs.

    A symbolic link to a folder is followed; a file, a link to nothing, or a
    path below a file is refused.

    Args:
        path: The run folder.

    Raises:
        ConfigError: Naming the path and what stands there.
    """
    path = Path(path)
    here = path
    while not here.exists() and not here.is_symlink() and here != here.parent:
        here = here.parent  # the nearest part of the path that exists
    if here.is_dir():
        return
    if here.is_symlink() and not here.exists():
        what = f"a link to nothing ({str(here)!r} points to {os.readlink(here)!r})"
    elif here == path:
        what = "an existing file"
    else:
        what = f"below {str(here)!r}, which is a file"
    raise ConfigError(
        message(
            f"The output_dir {str(path)!r} cannot be a run folder: it is {what}",
            received={"output_dir": str(path)},
            allowed="Give the path of a folder (created when missing), not of a file",
        )
    )


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        message(
            f"The output_dir {str(path)!r} cannot be written: {exc.strerror or exc}",
            received={"output_dir": str(path)},
            allowed="Choose a folder you can write to",
        )
    )


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
