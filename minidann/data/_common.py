"""Small pieces shared by the data modules: the error type, the `Split` container, the data folder
and an atomic `.npz` writer."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError", "Split", "resolve_data_dir", "data_dir_origin", "arrays_sha256", "save_npz_atomic", "temp_path",
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


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray], *, compress: bool = False) -> Path:
    """Write `arrays` to `path` so that readers see either the old file or the complete new one.

    A temporary file in the same folder is written, fsynced and `os.replace`d over `path` (a rename within one
    file system is atomic); on any failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def temp_path(path: Path) -> Path:
    """A fresh hidden name next to `path` (".name.<random>.part"), for write-then-`os.replace`.

    Same folder, so the final rename stays on one file system and is atomic. Unlike `tempfile.mkstemp`, a file
    opened later with mode "xb" gets the usual permissions (umask), not 0600.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
