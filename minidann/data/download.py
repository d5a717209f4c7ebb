"""Checked downloads: mirrors in order, a temporary file in the destination folder, a hash check, `os.replace`.

Nothing here knows about MNIST or BSDS500; `mnist.py` and `backgrounds.py` pass their own mirror lists and
checksum tables, and tests pass a local HTTP server's URLs.

Guarantees:
- The destination appears only complete and verified (it is renamed into place after the hash check).
- A failed, interrupted or mismatching download leaves no file behind (the temporary file is removed).
- Offline, it gives up within seconds: every connection and every read has a short timeout, and a host that
  could not be reached is not tried again for the next files.
- When every mirror fails, `DownloadError` lists each URL, the expected hash and the destination path, so the
  files can be fetched by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..io_errors import WriteFailed, write_failed
from ._common import DataError, remove_stale_temps, temp_path

__all__ = ["DEFAULT_TIMEOUT", "DataFolderNotWritable", "DownloadError", "RemoteFile", "download_file",
           "download_files", "by_hand_message"]

#: Seconds allowed for name resolution, for the connection and for each read. Short, so that an offline
#: machine falls back to the embedded subset within seconds instead of stalling.
DEFAULT_TIMEOUT = 5.0
_CHUNK = 1 << 16
#: The most bytes a file whose size is not published may have (the largest, BSDS500, is 70.8 MB).
MAX_DOWNLOAD_BYTES = 256 << 20
#: Slower than MIN_RATE bytes/s over RATE_WINDOW_S seconds, a mirror counts as unreachable.
MIN_RATE = 10_000
RATE_WINDOW_S = 60.0


class DownloadError(DataError):
    """Every mirror failed for at least one file. The message says how to fetch the files by hand."""


class DataFolderNotWritable(DownloadError):
    """Nothing was downloaded because the data folder cannot be created or written: a local problem, not the
    network's. The message names the folder and the fix."""


def _writable_folder(dest_dir: Path) -> None:
    """Create `dest_dir` if needed and check that a file can be written in it, before any mirror is tried.

    Raises:
        DataFolderNotWritable: it is a file, or it cannot be created or written (permissions, read-only disk).
    """
    if dest_dir.exists() and not dest_dir.is_dir():
        raise DataFolderNotWritable(f"the data folder {dest_dir} is a file, not a folder. Fix: pass a folder with "
                                    "--data-dir (or $MINIDANN_DATA)")
    probe = temp_path(dest_dir / "write-test")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        probe.open("xb").close()
        probe.unlink()
    except OSError as e:
        raise DataFolderNotWritable(f"cannot write to the data folder {dest_dir} ({type(e).__name__}: "
                                    f"{e.strerror or e}). Fix: choose a folder you can write to with --data-dir (or "
                                    "$MINIDANN_DATA), or make this one writable") from e


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch.

    Attributes:
        name: file name inside the data folder, e.g. "train-images-idx3-ubyte.gz".
        urls: mirrors, tried in order.
        expected: "md5:<hex>", "sha256:<hex>" or, where no checksum is published, "size:<bytes>".
    """

    name: str
    urls: tuple[str, ...]
    expected: str


class _Checker:
    """Incremental check of the downloaded bytes against `expected` ("algo:value")."""

    def __init__(self, expected: str):
        algo, _, value = expected.partition(":")
        if algo not in ("md5", "sha256", "size") or not value:
            raise ValueError(f"expected must be 'md5:<hex>', 'sha256:<hex>' or 'size:<n>', got {expected!r}")
        self.algo, self.value = algo, value.lower()
        self.size = 0
        self.hash = None if algo == "size" else hashlib.new(algo)

    def update(self, block: bytes) -> None:
        self.size += len(block)
        if self.hash is not None:
            self.hash.update(block)

    def actual(self) -> str:
        return str(self.size) if self.hash is None else self.hash.hexdigest()

    def ok(self) -> bool:
        return self.actual() == self.value


def _resolves(host: str, port: int, timeout: float) -> bool:
    """Name resolution with a deadline.

    `urlopen(timeout=...)` bounds the connection and the reads but not `getaddrinfo`, which can hang for tens
    of seconds behind a resolver that is configured but unreachable. A daemon thread bounds it.
    """
    result: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _fetch(url: str, tmp: Path, checker: _Checker, timeout: float, label: str) -> None:
    """Stream `url` into the new file `tmp`, feeding `checker`.

    Raises:
        OSError or http.client.HTTPException: on any network failure or an early close.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "minidann"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        # A file of known size may not grow past it, any other not past MAX_DOWNLOAD_BYTES: a server that sends
        # more than it should (or never stops) must not fill the disk.
        cap = int(checker.value) if checker.algo == "size" and checker.value.isdigit() else MAX_DOWNLOAD_BYTES
        if total is not None and total > cap:
            raise OSError(f"the server announces {total:,} bytes, more than the {cap:,} expected")
        read = getattr(resp, "read1", resp.read)  # read1: whatever has arrived, so a trickle is measured as such
        try:
            f = open(tmp, "xb")
        except OSError as e:  # a local failure, not the network's: the caller must not try the next mirror
            raise write_failed(tmp.parent / label, e, alternative=_ELSEWHERE) from e
        try:
            _stream_into(f, read, checker, cap, total, label)
        finally:
            try:
                f.close()
            except OSError as e:  # bytes still buffered after a failed write: the disk again, not the network
                raise write_failed(tmp.parent / label, e, alternative=_ELSEWHERE) from e


def _stream_into(f, read, checker: _Checker, cap: int, total: int | None, label: str) -> None:
    """_fetch's loop: read blocks until the end, checking size and rate, into the open file ``f``; sync it."""
    where = Path(f.name).parent / label  # (the final name, for the messages)
    window_start, window_bytes = time.monotonic(), 0
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a download must not fail for a progress bar
        tqdm = None
    bar = (
        tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=None, leave=False)
        if tqdm is not None
        else None
    )
    try:
        while True:
            block = read(_CHUNK)
            if not block:
                break
            if checker.size + len(block) > cap:
                raise OSError(f"the server sent more than the {cap:,} bytes expected")
            try:
                f.write(block)
            except OSError as e:
                raise write_failed(where, e, alternative=_ELSEWHERE) from e
            checker.update(block)
            # Each read has its timeout; a server that sends a little just before every timeout is caught
            # here: over every window of RATE_WINDOW_S seconds it must average MIN_RATE bytes per second.
            window_bytes += len(block)
            elapsed = time.monotonic() - window_start
            if elapsed >= RATE_WINDOW_S:
                if window_bytes < MIN_RATE * elapsed:
                    raise TimeoutError(f"too slow: {window_bytes / elapsed:,.0f} bytes/s over {elapsed:.0f} s, "
                                       f"less than {MIN_RATE:,}")
                window_start, window_bytes = time.monotonic(), 0
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    # http.client does not always raise when the server closes early, so compare with the announced size.
    if total is not None and checker.size != total:
        raise OSError(f"connection closed after {checker.size} of {total} bytes")
    try:
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
        raise write_failed(where, e, alternative=_ELSEWHERE) from e


_ELSEWHERE = "choose another data folder with --data-dir (or $MINIDANN_DATA)"


STALE_PART_S = 600  # a temporary file untouched this long was left by a killed download, not a running one


def _remove_stale_parts(dest: Path) -> None:
    """Delete temporary files of `dest` that a killed process left (Ctrl-C cleans up; SIGKILL cannot)."""
    remove_stale_temps(dest, max_age_s=STALE_PART_S)


def _try_mirrors(remote: RemoteFile, dest_dir: Path, timeout: float, dead: set[str]) -> tuple[Path | None, list[str]]:
    """Try each mirror of `remote` in order; return (path, []) on success or (None, reasons) on failure."""
    dest = dest_dir / remote.name
    _remove_stale_parts(dest)
    reasons: list[str] = []
    for url in remote.urls:
        parts = urlsplit(url)
        host = parts.netloc
        if host in dead:
            reasons.append(f"{url}: skipped, {host} was unreachable a moment ago")
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname and not _resolves(parts.hostname, port, timeout):
            dead.add(host)
            reasons.append(f"{url}: cannot resolve {parts.hostname} (offline?)")
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        # The temporary file lives in the destination folder so that os.replace is a same-file-system rename.
        tmp = temp_path(dest)
        try:
            checker = _Checker(remote.expected)
            _fetch(url, tmp, checker, timeout, remote.name)
            if not checker.ok():
                reasons.append(f"{url}: {checker.algo} mismatch, got {checker.actual()}")
                continue
            try:
                os.replace(tmp, dest)
            except OSError as e:
                raise write_failed(dest, e, alternative=_ELSEWHERE) from e
            return dest, []
        except WriteFailed as e:  # the disk, not the network: every other mirror would fail the same way
            raise DataFolderNotWritable(str(e)) from e
        except urllib.error.HTTPError as e:  # the host answered: it is alive, only this URL is bad
            reasons.append(f"{url}: HTTP {e.code} {e.reason}")
        except (OSError, http.client.HTTPException) as e:  # URLError, refused, reset, timeout, IncompleteRead
            if isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError)):
                dead.add(host)  # unreachable or stalled: do not wait for it again for the next files
            reasons.append(f"{url}: {type(e).__name__}: {getattr(e, 'reason', e)}")
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # no-op after a successful os.replace
    return None, reasons


def download_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    dead_hosts: set[str] | None = None,
) -> Path:
    """Download one file into `dest_dir`, trying its mirrors in order.

    Args:
        remote: name, mirror URLs and expected hash.
        dest_dir: the data folder; created if needed.
        timeout: seconds for name resolution, connection and each read.
        dead_hosts: hosts found unreachable so far; updated in place and skipped, so an offline machine pays
            the timeout once per host, not once per file.

    Returns:
        The path of the verified file, `dest_dir / remote.name`.

    Raises:
        DownloadError: every mirror failed; the message lists URLs, the expected hash and the destination.
    """
    dest_dir = Path(dest_dir)
    _writable_folder(dest_dir)  # a local problem must not be reported as "no network"
    path, reasons = _try_mirrors(remote, dest_dir, timeout, dead_hosts if dead_hosts is not None else set())
    if path is None:
        raise DownloadError(by_hand_message([remote], dest_dir, {remote.name: reasons}))
    return path


def download_files(
    remotes: Sequence[RemoteFile], dest_dir: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT
) -> list[Path]:
    """Download several files; if any fails, raise one DownloadError covering every failed file.

    Files that did download are kept (they are complete and verified).

    Returns:
        The paths of the downloaded files, in the order of `remotes`.
    """
    dest_dir = Path(dest_dir)
    _writable_folder(dest_dir)  # a local problem must not be reported as "no network"
    dead: set[str] = set()
    paths: list[Path] = []
    failed: dict[str, list[str]] = {}
    for remote in remotes:
        path, reasons = _try_mirrors(remote, dest_dir, timeout, dead)
        if path is None:
            failed[remote.name] = reasons
        else:
            paths.append(path)
    if failed:
        raise DownloadError(by_hand_message([r for r in remotes if r.name in failed], dest_dir, failed))
    return paths


def by_hand_message(
    remotes: Iterable[RemoteFile], dest_dir: Path, reasons: dict[str, list[str]] | None = None
) -> str:
    """The offline help: for each file, its URLs, expected hash and destination, then the failures."""
    remotes = list(remotes)
    lines = [
        f"Could not download {', '.join(r.name for r in remotes)} (no network, or every mirror failed). "
        "Fetch the files by hand from any of these URLs, check the hash, and put them at the destination:"
    ]
    for r in remotes:
        lines.append(f"  {r.name}  expected {r.expected}  ->  {Path(dest_dir) / r.name}")
        lines.extend(f"      {url}" for url in r.urls)
    if reasons:
        lines.append("What went wrong:")
        skipped = 0
        for name, rs in reasons.items():
            for why in rs:
                if ": skipped, " in why:  # the host's first failure is already listed
                    skipped += 1
                else:
                    lines.append(f"  {name}: {why}")
        if skipped:
            lines.append(f"  ({skipped} more URLs skipped: their hosts had just failed)")
    return "\n".join(lines)
