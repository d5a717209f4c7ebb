"""Failed writes, in words: which file, why (disk full, read-only, permission, a missing folder) and the fix.

Every writer of minidann (checkpoints, the MNIST-M cache, downloads, plots, the run's metrics and results) turns
an ``OSError`` from the file system into :class:`WriteFailed`, whose message is built by
:func:`describe_write_error`. A program that catches it exits with :data:`EXIT_WRITE_FAILED`::

    try:
        save_checkpoint(path, model)
    except WriteFailed as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_status)     # 4
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

__all__ = ["EXIT_WRITE_FAILED", "WriteFailed", "check_folder_writable", "describe_write_error", "write_failed"]

#: The exit status of a program that stopped because a file could not be written.
EXIT_WRITE_FAILED = 4


class WriteFailed(OSError):
    """A file could not be written; the message names the file, the cause and the fix.

    It subclasses OSError (keeping the ``errno`` of the failure), so code that already handles OSError around a
    write keeps working.

    Attributes:
        path: the file that was being written.
        errno: the error number of the underlying failure (``errno.ENOSPC``, ...), or None.
        exit_status: :data:`EXIT_WRITE_FAILED`.
    """

    exit_status = EXIT_WRITE_FAILED

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno_: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)
        self.errno = errno_
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across processes with its attributes
        return (type(self), (self.message, self.path, self.errno))


def _nearest_existing(path: Path) -> Path | None:
    """The longest leading part of `path` that exists (itself included), or None."""
    for p in (path, *path.parents):
        try:
            if p.exists() or p.is_symlink():
                return p
        except OSError:  # a component is not searchable: keep climbing
            continue
    return None


def _free_bytes(path: Path) -> int | None:
    folder = _nearest_existing(path)
    if folder is None:
        return None
    try:
        return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def describe_write_error(path: str | os.PathLike, exc: BaseException, *, alternative: str | None = None,
                         atomic: bool = True, subject: str | None = None) -> str:
    """One message for a failed write of `path`: the file, the cause and the fix.

    Args:
        path: the file being written (the final name, not its temporary file).
        exc: the exception the write raised (an OSError; others are described by their type and text).
        alternative: how the user can send the output elsewhere, e.g. "choose another --out"; it ends every fix.
        atomic: the writer replaces the file only once the new one is complete (write-then-rename), so the
            message can say that the old file is unchanged.
        subject: what could not be written, in words (default: `path`).

    Returns:
        e.g. "cannot write /runs/a/checkpoints/dann.npz: the disk is full (0.1 MB free on the file system of
        /runs/a/checkpoints). Fix: free some space there, or choose another --out; the file as it was before this
        write is unchanged."
    """
    path = Path(path)
    folder = path.parent
    other = f", or {alternative}" if alternative else ""
    code = getattr(exc, "errno", None)
    unchanged = "; the file as it was before this write is unchanged" if atomic else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(folder)
        what = "the disk is full" if code == errno.ENOSPC else "the disk quota is used up"
        where = f" ({_mb(free)} free on the file system of {folder})" if free is not None else ""
        cause, fix = f"{what}{where}", f"free some space there{other}"
    elif code == errno.EROFS:
        cause, fix = f"the file system of {folder} is mounted read-only", f"write to a writable disk{other}"
    elif code in (errno.EACCES, errno.EPERM):
        cause = f"permission denied (user {_user()} may not write in {folder})"
        fix = f"make the folder writable (chmod u+w {folder}){other}"
    elif code == errno.ENOTDIR or (code == errno.EEXIST and folder.exists() and not folder.is_dir()):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        cause = f"{blocker} is a file, not a folder" if blocker is not None else "a part of the path is not a folder"
        fix = f"rename or move that file{other}"
    elif code == errno.ENOENT:
        missing = folder if not folder.exists() else path
        cause = f"the folder {missing} does not exist (was it deleted or unmounted while running?)"
        fix = f"recreate it (mkdir -p {folder}){other}"
    elif code == errno.EISDIR:
        cause, fix, unchanged = f"{path} is a folder", f"move that folder away{other}", ""
    elif code == errno.ENAMETOOLONG:
        cause, fix = "the path is too long for the file system", f"use a shorter folder name{other}"
    else:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        cause, fix = f"{type(exc).__name__}: {text}", f"check the disk and the folder{other}"
    return f"cannot write {subject or path}: {cause}. Fix: {fix}{unchanged}."


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, OSError):
        return str(getattr(os, "geteuid", lambda: "?")())


def write_failed(path: str | os.PathLike, exc: BaseException, *, alternative: str | None = None,
                 atomic: bool = True) -> WriteFailed:
    """The :class:`WriteFailed` for `exc` (raise it ``from exc``); a WriteFailed is returned unchanged."""
    if isinstance(exc, WriteFailed):
        return exc
    message = describe_write_error(path, exc, alternative=alternative, atomic=atomic)
    return WriteFailed(message, path, getattr(exc, "errno", None))


#: Bytes the writability probe writes and syncs: enough that a full disk refuses them (an empty file can still be
#: created on a full disk).
PROBE_BYTES = 64 << 10


def check_folder_writable(folder: str | os.PathLike, *, need_bytes: int = 0, alternative: str | None = None,
                          create: bool = True) -> Path:
    """Check, before any long work, that files can be written in `folder`: create it, write, sync, remove a probe.

    Args:
        folder: the folder (created, with its parents, when `create` is true; else its nearest existing
            ancestor is probed).
        need_bytes: fail unless at least this many bytes are free on its file system (0: no check beyond the
            probe).
        alternative: how to write elsewhere, e.g. "choose another --out" (ends the fix).
        create: create the folder; False leaves the file system as it was.

    Returns:
        `folder`, as a Path.

    Raises:
        WriteFailed: a file where the folder (or one of its parents) should be, a read-only file system, no
            permission, a full disk or quota, or less than `need_bytes` free. The message names the folder.
    """
    import secrets

    folder = Path(folder)
    probe_dir = folder
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            probe_dir = _nearest_existing(folder) or Path(".")
            if not probe_dir.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(probe_dir))
        probe = probe_dir / f".minidann-write-test.{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(probe, "xb") as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass
    except OSError as e:
        message = describe_write_error(folder / "(any file)", e, alternative=alternative, atomic=False,
                                       subject=f"in the folder {folder}")
        raise WriteFailed(message, folder, e.errno) from e
    if need_bytes:
        free = _free_bytes(probe_dir)
        if free is not None and free < need_bytes:
            other = f", or {alternative}" if alternative else ""
            raise WriteFailed(f"cannot write in the folder {folder}: only {_mb(free)} free on its file system, "
                              f"about {_mb(need_bytes)} are needed. Fix: free some space there{other}.", folder,
                              errno.ENOSPC)
    return folder
