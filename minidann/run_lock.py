"""The lock of a run folder: one O_EXCL file, held with flock for the whole run, naming who holds it.

See :mod:`minidann.run_folder`, which takes it before it looks at what the folder holds.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data._common import pid_alive
from .io_errors import write_failed

try:
    import fcntl
except ImportError:  # not POSIX: the pid alone decides whether a lock is stale
    fcntl = None

__all__ = ["LOCK_NAME", "LockInfo", "RunFolderBusy", "RunFolderError", "acquire_lock", "read_lock"]

LOCK_NAME = ".minidann-run.lock"


class RunFolderError(Exception):
    """The folder cannot be used by this run; the message says why and gives a fix that destroys nothing.

    Attributes:
        path: the folder.
        reason: "not_a_folder", "not_a_run_folder", "other_run", "foreign_files" or "locked".
        foreign: up to five files in the folder that no run wrote (relative paths).
        manifest: the folder's manifest, if it has one.
        exit_status: 2, the exit status of a refused command line.
    """

    exit_status = 2

    def __init__(self, message: str, path: Path, reason: str, *, foreign: tuple[str, ...] = (),
                 manifest: dict | None = None):
        super().__init__(message)
        self.path, self.reason, self.foreign, self.manifest = path, reason, foreign, manifest


class RunFolderBusy(RunFolderError):
    """Another run holds the folder's lock. ``holder`` is its :class:`LockInfo` (None if unreadable)."""

    def __init__(self, message: str, path: Path, holder: LockInfo | None):
        super().__init__(message, path, "locked")
        self.holder = holder


@dataclass(frozen=True)
class LockInfo:
    """Who holds a run folder: what its lock file says."""

    pid: int
    host: str
    namespace: str  # host name and pid namespace: where `pid` means this process (data._common.process_namespace)
    started: str  # ISO 8601 with the UTC offset
    command: str
    run_id: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started} ({self.command})"

    @classmethod
    def from_json(cls, text: str) -> LockInfo | None:
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["namespace"]), str(d["started"]), str(d["command"]),
                       str(d["run_id"]))
        except (ValueError, KeyError, TypeError):
            return None


def now_iso() -> str:
    """The local time now, ISO 8601 with the UTC offset (what a lock and a manifest record)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_lock(folder: str | os.PathLike) -> LockInfo | None:
    """What the lock file of `folder` says (whether or not its run is still alive), or None."""
    try:
        return LockInfo.from_json((Path(folder) / LOCK_NAME).read_text())
    except OSError:
        return None


def _try_flock(fd: int) -> bool | None:
    """True: we hold the lock now; False: another open file holds it; None: this file system has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, EINVAL: no locks here


def _write_info(fd: int, info: LockInfo) -> None:
    data = json.dumps(info.__dict__).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read_info(fd: int) -> LockInfo | None:
    return LockInfo.from_json(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))


def _busy(folder: Path, holder: LockInfo | None, alive: str) -> RunFolderBusy:
    lock = folder / LOCK_NAME
    if holder is None:
        return RunFolderBusy(f"{folder} is in use by another run (its lock {lock} is held but unreadable). Fix: "
                             "wait for that run to end, or choose another output folder (--out)", folder, None)
    return RunFolderBusy(
        f"{folder} is in use by another run: {holder.describe()}{alive}. Its files would mix with this run's. Fix: "
        f"wait for it to end (or stop it: Ctrl-C or kill {holder.pid} on {holder.host} saves its checkpoint), or "
        "choose another output folder (--out); do not delete the folder or its files while it runs",
        folder, holder)


def acquire_lock(folder: Path, info: LockInfo, log: Callable[[str], None]) -> tuple[int, LockInfo | None]:
    """Create or take over the lock of `folder`; return (fd, the stale holder taken over or None)."""
    import time

    lock = folder / LOCK_NAME
    for _ in range(100):  # only races (a lock being written, released or taken over) go round again
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        except OSError as e:
            raise write_failed(lock, e, alternative="choose another output folder (--out)") from e
        else:
            _try_flock(fd)  # a new file: nobody else can hold it
            _write_info(fd, info)
            return fd, None
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # released a moment ago
            continue
        except OSError as e:
            raise write_failed(lock, e, alternative="choose another output folder (--out)") from e
        got = _try_flock(fd)
        holder = _read_info(fd)
        if got is False:
            os.close(fd)
            if holder is None:  # created a moment ago, its content not written yet
                time.sleep(0.02)
                continue
            raise _busy(folder, holder, "")
        try:
            same_file = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # released and recreated while we opened it: look again
            os.close(fd)
            continue
        if holder is not None and holder.namespace != info.namespace:
            os.close(fd)
            raise RunFolderBusy(
                f"{folder} is locked by a run on another machine: {holder.describe()}. Whether it still runs cannot "
                f"be checked from here. Fix: if no run is going on in {holder.host} with this folder, delete the "
                f"lock file {lock}; otherwise wait for it, or choose another output folder (--out)", folder, holder)
        if got is None and holder is not None and pid_alive(holder.pid) and holder.pid != os.getpid():
            os.close(fd)  # no flock on this file system: a live pid must be taken at its word
            raise _busy(folder, holder, " (the process is alive)")
        _write_info(fd, info)
        what = "an unreadable lock" if holder is None else f"the lock of a run that is gone: {holder.describe()}"
        log(f"{folder}: took over {what}")
        return fd, holder
    raise RunFolderBusy(f"{folder}: its lock {lock} kept changing while this run tried to take it. Fix: try again, "
                        "or choose another output folder (--out)", folder, None)
