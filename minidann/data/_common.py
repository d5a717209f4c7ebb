"""Small pieces shared by the data modules: the error type, the `Split` container, the data folder
and an atomic `.npz` writer."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..io_errors import WriteFailed, write_failed

__all__ = [
    "DataError", "Split", "resolve_data_dir", "data_dir_origin", "arrays_sha256", "save_npz_atomic", "temp_path",
    "atomic_write", "write_bytes_atomic", "write_text_atomic", "remove_stale_temps", "pid_alive", "process_namespace",
    "WriteFailed",
]


class DataError(ValueError):
    """A data file is missing, malformed or does not match its checksum.

    The message always names the file (or URL) and says how to fix the problem. It subclasses ValueError so
    callers that only know "bad input" can still catch it.
    """


@dataclass(frozen=True)
class Split:
    """One split of a digit dataset, on the host.

    Attributes:
        images: (N, 28, 28) uint8 for MNIST, (N, 28, 28, 3) uint8 for MNIST-M.
        labels: (N,) int64 digit labels 0-9.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def data_dir_origin(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Resolve the data folder and say which rule chose it.

    Order: the explicit argument (CLI `--data-dir`) > `MINIDANN_DATA` > `$XDG_CACHE_HOME/minidann` >
    `~/.cache/minidann`. Empty environment variables count as unset, as the XDG spec asks.

    Returns:
        (path, origin) where origin is e.g. "--data-dir" or "MINIDANN_DATA".
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get("MINIDANN_DATA", "")
    if env:
        return Path(env).expanduser(), "MINIDANN_DATA"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg:
        return Path(xdg).expanduser() / "minidann", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "minidann", "default ~/.cache"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: `data_dir` > `MINIDANN_DATA` > `$XDG_CACHE_HOME/minidann` > `~/.cache/minidann`.

    The folder is not created here; writers create it when they first need it.
    """
    return data_dir_origin(data_dir)[0]


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of decoded arrays, independent of how the `.npz` container was compressed or zipped.

    For each key in sorted order it hashes the key, the dtype string, the shape and the C-order bytes, so
    re-saving the same arrays (another zlib level, another zip timestamp) keeps the digest, while any change
    of a value, a dtype or a shape changes it.
    """
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray], *, compress: bool = False,
                    alternative: str | None = None) -> Path:
    """Write `arrays` to `path` so that readers see either the old file or the complete new one.

    A temporary file in the same folder is written, fsynced and `os.replace`d over `path` (a rename within one
    file system is atomic); on any failure the temporary file is removed. See `atomic_write`.

    Raises:
        WriteFailed: the file could not be written (the message names the cause and the fix; `alternative`,
            e.g. "choose another --out", ends the fix).
    """
    path = Path(path)
    with atomic_write(path, alternative=alternative) as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, alternative: str | None = None) -> Iterator[BinaryIO]:
    """Write a file whole or not at all: yields a binary file; on leaving the block it replaces `path`.

    The data go to a temporary file next to `path` (see `temp_path`, which also removes the temporaries of
    killed earlier writes), are flushed and fsynced, and the file is `os.replace`d over `path`. If the block or
    the write raises, the temporary file is removed and `path` keeps its old contents (or stays absent).

    Raises:
        WriteFailed: an OSError while creating the folder, writing, syncing or renaming; the message names
            `path`, the cause (disk full, read-only, permission, a missing folder) and the fix.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        f = open(tmp, "xb")
    except OSError as e:
        raise write_failed(path, e, alternative=alternative) from e
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e, alternative=alternative) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # no-op after a successful os.replace
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder so that a rename into it survives a power cut (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, alternative: str | None = None) -> Path:
    """`path.write_bytes(data)`, whole or not at all (see `atomic_write`)."""
    with atomic_write(path, alternative=alternative) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, alternative: str | None = None) -> Path:
    """`path.write_text(text)` in UTF-8, whole or not at all (see `atomic_write`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), alternative=alternative)


#: A temporary file untouched this long was left by a killed writer, not a running one.
STALE_TEMP_S = 600
# ".<target>.<host tag>-<pid>-<random>.part", and the older ".<target>.<12 hex>.part"
_TEMP_MIDDLE = re.compile(r"(?:(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}|[0-9a-f]{12})")


def process_namespace() -> str:
    """This machine's name and its process-id namespace: where a pid means the same process.

    Two containers on one machine can share a host name (host networking) but not their pids, so "this host"
    is both, e.g. "node7 pid:[4026531836]" (the namespace part only where /proc tells it).
    """
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{socket.gethostname()} {ns}".strip()


def _host_tag() -> str:
    """Six hex digits of `process_namespace()`: a temporary file names the machine and process writing it."""
    return hashlib.sha256(process_namespace().encode()).hexdigest()[:6]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when it exists but belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, it is not ours
        return True
    return True


def temp_path(path: Path) -> Path:
    """A fresh hidden name next to `path`, ".name.<host>-<pid>-<random>.part", for write-then-`os.replace`.

    Same folder, so the final rename stays on one file system and is atomic. Unlike `tempfile.mkstemp`, a file
    opened later with mode "xb" gets the usual permissions (umask), not 0600. The name says which target, host
    and process it belongs to, and asking for one first removes what killed writes of `path` left behind
    (`remove_stale_temps`), so every writer that uses it cleans up after crashes.
    """
    path = Path(path)
    remove_stale_temps(path)
    return path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.part")


def remove_stale_temps(path: str | os.PathLike, *, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temporary files of `path` (from `temp_path`) that killed writers left behind.

    A temporary file is stale when the process its name records is gone from this host, or when nobody has
    written to it for `max_age_s` seconds (a temporary file of another host, or of the older name format, is
    judged by its age only). Temporary files of other targets, and live writes, are left alone.

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix, now, removed = f".{path.name}.", time.time(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # no folder yet, or not readable: nothing to clean
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        m = _TEMP_MIDDLE.fullmatch(name[len(prefix):-len(".part")])
        if m is None:
            continue
        try:
            dead = m["host"] == _host_tag() and not pid_alive(int(m["pid"])) and int(m["pid"]) != os.getpid()
            if dead or now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to delete: harmless either way
            pass
    return removed
