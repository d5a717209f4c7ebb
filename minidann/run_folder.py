"""An output folder belongs to one run: a manifest of the files the run wrote, and a lock while it runs.

::

    with claim_run_folder("runs/a", resume=False) as run:   # refuses a folder that holds files it did not write
        write_text_atomic(run.path / "config.json", "{}")
        run.record("config.json")                           # the manifest now says this run wrote it
    # the lock is released here, also when the block raises

Two hidden files live in the folder:

- ``.minidann-run.json``, the manifest: the run id, when and where the run started, its command and the files
  it wrote (relative paths). A folder with a manifest is a run folder; a resume continues only in one.
- ``.minidann-run.lock``, created with ``O_EXCL`` and held (``flock``) for as long as the run goes: the pid,
  the host, the start time and the command of the run. A second run that finds it is refused, and the message
  names the first. A lock whose run is gone from this machine (its pid no longer exists, or the pid was reused
  by a process that does not hold the lock) is stale: it is taken over, with a message. A lock from another
  machine cannot be checked from here: it is named, never called stale.

Decisions of :func:`claim_run_folder`, once it holds the lock:

- a missing or empty folder, or one whose manifest lists no file that is still there: a new run;
- a run folder (manifest) with its run's files: continued with ``resume=True``; otherwise refused, or with
  ``overwrite=True`` the files the manifest lists are deleted and a new run starts;
- files that no run wrote (no manifest lists them): refused, unless ``overwrite=True`` (they are left alone;
  the run replaces those it writes under the same names) or a resume of the run folder they are in;
- ``resume=True`` in a folder without a manifest (a checkpoint copied elsewhere): refused; continue the run in
  a new folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .data._common import process_namespace, write_text_atomic
from .io_errors import check_folder_writable, write_failed
from .run_lock import LOCK_NAME, LockInfo, RunFolderBusy, RunFolderError, acquire_lock, now_iso, read_lock

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "LockInfo", "RunFolder", "RunFolderBusy", "RunFolderError",
           "claim_run_folder", "read_lock", "read_manifest"]

MANIFEST_NAME = ".minidann-run.json"
MANIFEST_FORMAT = 1
_MAX_LISTED = 5  # foreign files named in a refusal
# temporary files of atomic writes (data._common.temp_path) and write probes: never the user's files
_OURS = re.compile(r"^\..+\.(?:[0-9a-f]{6}-[0-9]{1,10}-[0-9a-f]{8}|[0-9a-f]{12})\.part$|^\.minidann-write-test\.")


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a run folder, or None when `folder` has none (or an unreadable one)."""
    try:
        d = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("run_id"), str) or not isinstance(d.get("files"), list):
        return None
    return d


@dataclass
class RunFolder:
    """A claimed run folder; the lock is held until :meth:`release` (or the end of the ``with`` block).

    Attributes:
        path: the folder.
        run_id: the run's id (kept across resumes).
        files: relative paths of the files the run wrote (what the manifest lists).
        resumed: the folder was continued, not started.
        foreign: files present that no run wrote (tolerated on a resume or with ``overwrite``), up to five.
        took_over: the stale lock taken over, if any.
        notes: what the claim did that the user should know (printed to stderr as well).
    """

    path: Path
    run_id: str
    files: set[str]
    resumed: bool
    manifest: dict
    foreign: tuple[str, ...] = ()
    took_over: LockInfo | None = None
    notes: list[str] = field(default_factory=list)
    _fd: int | None = field(default=None, repr=False)

    def _relative(self, path: str | os.PathLike) -> str:
        p = Path(path)
        if p.is_absolute() or p.parts[:len(self.path.parts)] == self.path.parts:
            try:
                p = p.resolve().relative_to(self.path.resolve())
            except ValueError:
                raise ValueError(f"{path} is outside the run folder {self.path}") from None
        if ".." in p.parts:
            raise ValueError(f"{path} is outside the run folder {self.path}")
        return p.as_posix()

    def record(self, *paths: str | os.PathLike) -> None:
        """Note in the manifest that this run wrote these files: relative to the folder ("config.json"), or paths
        that start with the folder's own path (``run.path / "config.json"``).

        Raises:
            WriteFailed: the manifest could not be written.
        """
        new = {self._relative(p) for p in paths} - self.files
        if new:
            self.files |= new
            self._write_manifest()

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether the manifest lists `path` as written by this run."""
        return self._relative(path) in self.files

    def _write_manifest(self) -> None:
        self.manifest["files"] = sorted(self.files)
        write_text_atomic(self.path / MANIFEST_NAME, json.dumps(self.manifest, indent=1),
                          alternative="choose another output folder (--out)")

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock (only if it is still ours) and close it. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        lock = self.path / LOCK_NAME
        try:
            with contextlib.suppress(OSError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    os.unlink(lock)
        finally:
            os.close(fd)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _warn(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def _unlisted_files(folder: Path, owned: set[str]) -> list[str]:
    """Up to `_MAX_LISTED` files (and links) under `folder` that no run recorded, in walk order."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = Path(root).relative_to(folder)
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        for name in sorted(files) + links:
            rel = (rel_root / name).as_posix()
            if rel in (MANIFEST_NAME, LOCK_NAME) or rel in owned or _OURS.match(name):
                continue
            found.append(rel)
            if len(found) >= _MAX_LISTED:
                return found
    return found


def claim_run_folder(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                     command: str | None = None, log: Callable[[str], None] = _warn) -> RunFolder:
    """Claim `path` for this run: check it is writable, take its lock, check what it holds, write the manifest.

    Args:
        path: the output folder (created if missing).
        overwrite: accept a folder that holds another run's files (they are deleted) or files no run wrote
            (left alone; the run replaces those it writes under the same names).
        resume: continue the run whose manifest is in the folder (its id and files are kept).
        command: recorded in the lock and manifest (default: this process's command line).
        log: where the notes go (stale lock taken over, files deleted by ``overwrite``).

    Returns:
        The :class:`RunFolder`, holding the lock; use it as a context manager or call ``release()``.

    Raises:
        RunFolderError: the folder is a file, holds files this run must not overwrite, or (on a resume) is not
            a run folder; RunFolderBusy when another run holds it. The message says what to do instead.
        WriteFailed: the folder cannot be written (read-only, permission, full disk).
    """
    if overwrite and resume:
        raise ValueError("overwrite and resume exclude each other: a resume keeps the run's files")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file; the run needs a folder. Fix: choose another output folder (--out)",
                             folder, "not_a_folder")
    check_folder_writable(folder, alternative="choose another output folder (--out)")
    ns = process_namespace()
    command = command if command is not None else shlex.join(sys.argv)
    info = LockInfo(os.getpid(), ns.split(" ")[0], ns, now_iso(), command, secrets.token_hex(6))
    fd, stale = acquire_lock(folder, info, log)
    try:
        run = _decide(folder, info, overwrite, resume, log)
        run._fd, run.took_over = fd, stale
        if stale is not None:
            run.notes.insert(0, f"took over the stale lock of {stale.describe()}")
        return run
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)
        os.close(fd)
        raise


def _decide(folder: Path, info: LockInfo, overwrite: bool, resume: bool, log: Callable[[str], None]) -> RunFolder:
    """With the lock held: accept, refuse or clear the folder; write the manifest."""
    manifest = read_manifest(folder)
    owned = set(manifest["files"]) if manifest else set()
    present = sorted(f for f in owned if (folder / f).exists() or (folder / f).is_symlink())
    foreign = tuple(_unlisted_files(folder, owned))
    notes: list[str] = []
    some = lambda names: ", ".join(names[:_MAX_LISTED]) + (", ..." if len(names) > _MAX_LISTED else "")
    if resume:
        if manifest is None:
            raise RunFolderError(
                f"{folder} is not the folder of a minidann run (it has no {MANIFEST_NAME}), so continuing the run "
                f"there would mix its files with files it did not write. Fix: choose a new output folder for the "
                "continued run (--out)", folder, "not_a_run_folder", foreign=foreign)
        run = RunFolder(folder, manifest["run_id"], owned, True, manifest, foreign)
    else:
        if present and not overwrite:
            raise RunFolderError(
                f"{folder} holds run {manifest['run_id']} (started {manifest.get('created', '?')} on "
                f"{manifest.get('host', '?')}: {manifest.get('command', '?')}) with {len(present)} files "
                f"({some(present)}). Fix: continue that run (--resume), choose another output folder (--out), or "
                "replace it (--overwrite deletes its files)", folder, "other_run", foreign=foreign, manifest=manifest)
        if foreign and not overwrite:
            raise RunFolderError(
                f"{folder} holds files that no minidann run wrote ({some(list(foreign))}); this run would "
                f"overwrite any of them it writes too. Fix: choose a new or empty output folder (--out), or pass "
                f"--overwrite (files of the same names are replaced, the others left alone)", folder,
                "foreign_files", foreign=foreign)
        if present:  # overwrite: the files of the earlier run go, so that none of them is mistaken for this run's
            for f in present:
                try:
                    (folder / f).unlink(missing_ok=True)
                except OSError as e:
                    raise write_failed(folder / f, e, alternative="choose another output folder (--out)",
                                       atomic=False) from e
            notes.append(f"--overwrite: deleted the {len(present)} files of run {manifest['run_id']} "
                         f"({some(present)})")
        if foreign:
            notes.append(f"--overwrite: files no run wrote are left in place ({some(list(foreign))})")
        manifest = {"format": MANIFEST_FORMAT, "run_id": info.run_id, "created": info.started, "host": info.host,
                    "command": info.command, "files": []}
        run = RunFolder(folder, info.run_id, set(), False, manifest, foreign)
    run.manifest.update(last_started=info.started, last_command=info.command)
    run._write_manifest()
    for n in notes:
        log(f"{folder}: {n}")
    run.notes.extend(notes)
    return run
