"""MNIST from IDX files: reading, validation, checksum verification and download.

The four standard files live directly in the data folder, gzipped or not (either name works):

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]  t10k-images-idx3-ubyte[.gz]  t10k-labels-idx1-ubyte[.gz]

IDX format (big-endian): images are magic 2051, count, rows, cols, then count * rows * cols uint8 pixels;
labels are magic 2049, count, then count uint8 labels.

Verification (`verify=True`, the default) checks the content, not the container: the md5 of the decompressed
IDX bytes must equal the official value, so a copy that was gunzipped or re-compressed still passes. As a second
route, a `.gz` file whose own bytes have the official `.gz` md5 (paper.md) passes too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from ._common import DataError, Split, resolve_data_dir
from .download import DEFAULT_TIMEOUT, RemoteFile, by_hand_message, download_files

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_GZ_MD5",
    "MNIST_RAW_MD5",
    "read_idx",
    "write_idx",
    "find_mnist_file",
    "missing_mnist_files",
    "mnist_remotes",
    "download_mnist",
    "load_mnist",
]

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
#: A bound on the count a header may declare, so a corrupt header cannot make us allocate gigabytes.
MAX_ITEMS = 1_000_000

#: split -> (images file, labels file), without the optional ".gz".
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Mirrors in the order of paper.md (the original yann.lecun.com site answers 403/404).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: md5 of the official .gz files (paper.md; also torchvision's MNIST resources).
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: md5 and size of the decompressed official files. The sizes follow from the format (16 + 60,000 * 784 ...);
#: the md5s are the values published for the uncompressed files by several independent MNIST loaders (they
#: could not be recomputed here without network access; the .gz route above covers official downloads anyway).
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}

_READ_BLOCK = 1 << 20

_FIX = "Delete it and run `python -m minidann.data download`, or put a correct copy there."


def _read_all(path: Path, header_len: int, item: int) -> bytes:
    """The decompressed bytes of `path`, at most one byte past what its header declares.

    gzip is recognised by its magic bytes, not by the file name, so a gunzipped copy named ".gz" still reads.
    """
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            # Read the header first: its count bounds how much we are willing to read (no gzip bombs).
            head = f.read(header_len)
            if len(head) < 8:
                return head
            count = struct.unpack(">I", head[4:8])[0]
            # One byte more than declared, so that trailing data is detected. Read in blocks, so that memory
            # follows what the file holds, not what its header claims (a 16-byte file may declare 784 MB).
            limit = header_len + min(count, MAX_ITEMS) * item + 1
            data = bytearray(head)
            while len(data) < limit:
                block = f.read(min(_READ_BLOCK, limit - len(data)))
                if not block:
                    break
                data += block
            return bytes(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress it ({e}). {_FIX}") from e


def read_idx(path: str | os.PathLike, kind: str) -> tuple[np.ndarray, bytes]:
    """Read and validate one MNIST IDX file.

    Args:
        path: an IDX file, gzipped or not.
        kind: "images" (magic 2051, 28x28) or "labels" (magic 2049, values 0-9).

    Returns:
        (array, raw) where array is (N, 28, 28) uint8 images or (N,) uint8 labels, and raw the decompressed
        file bytes (for checksums).

    Raises:
        DataError: wrong magic, dimensions other than 28x28, a count of 0 or over the limit, a payload shorter or
            longer than the header says, or labels outside 0-9. The message names the file.
    """
    path = Path(path)
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    header_len, item = (16, 28 * 28) if kind == "images" else (8, 1)
    raw = _read_all(path, header_len, item)
    if len(raw) < header_len:
        raise DataError(f"{path}: only {len(raw)} bytes, shorter than the {header_len}-byte IDX header. {_FIX}")
    magic, count = struct.unpack(">II", raw[:8])
    expected_magic = IMAGE_MAGIC if kind == "images" else LABEL_MAGIC
    if magic != expected_magic:
        raise DataError(
            f"{path}: magic number {magic}, expected {expected_magic} for an IDX {kind} file "
            f"(2051 = images, 2049 = labels): wrong file or corrupt. {_FIX}"
        )
    if count > MAX_ITEMS:
        raise DataError(f"{path}: header declares {count} items, more than the limit {MAX_ITEMS}. {_FIX}")
    if count == 0:  # a valid IDX file, but nothing to train or test on (and every later step would fail on it)
        raise DataError(f"{path}: header declares 0 {kind}: the file holds no data. {_FIX}")
    if kind == "images":
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (28, 28):
            raise DataError(f"{path}: images are {rows}x{cols}, MNIST images are 28x28. {_FIX}")
    payload = len(raw) - header_len
    if payload != count * item:
        what = "is truncated" if payload < count * item else "has trailing bytes"
        raise DataError(
            f"{path}: payload is {payload} bytes but the header declares {count} {kind} "
            f"({count * item} bytes): the file {what}. {_FIX}"
        )
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header_len).copy()
    if kind == "images":
        return arr.reshape(count, 28, 28), raw
    bad = np.flatnonzero(arr > 9)
    if bad.size:
        raise DataError(f"{path}: label {arr[bad[0]]} at index {bad[0]}; labels must be 0-9. {_FIX}")
    return arr, raw


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write (N, 28, 28) uint8 images or (N,) uint8 labels as IDX; gzipped when `path` ends with ".gz".

    Used by the tests and handy for custom subsets (load them with `verify=False`).
    """
    path = Path(path)
    a = np.ascontiguousarray(array, dtype=np.uint8)
    if a.ndim == 3:
        header = struct.pack(">IIII", IMAGE_MAGIC, a.shape[0], a.shape[1], a.shape[2])
    elif a.ndim == 1:
        header = struct.pack(">II", LABEL_MAGIC, a.shape[0])
    else:
        raise ValueError(f"expected (N, H, W) images or (N,) labels, got shape {a.shape}")
    data = header + a.tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def find_mnist_file(data_dir: str | os.PathLike, name: str) -> Path | None:
    """The file for `name` ("train-images-idx3-ubyte") in `data_dir`: uncompressed first, then ".gz"."""
    for candidate in (Path(data_dir) / name, Path(data_dir) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_mnist_files(data_dir: str | os.PathLike) -> list[str]:
    """Base names of the four MNIST files that are in `data_dir` in neither form."""
    names = [n for pair in MNIST_FILES.values() for n in pair]
    return [n for n in names if find_mnist_file(data_dir, n) is None]


def mnist_remotes(
    names: list[str] | None = None,
    mirrors: tuple[str, ...] | list[str] | None = None,
    checksums: dict[str, str] | None = None,
) -> list[RemoteFile]:
    """RemoteFile specs for the `.gz` of each base name, from `mirrors` (base URLs ending in "/").

    Args:
        names: base names (default: all four).
        mirrors: base URLs, tried in order (default `MNIST_MIRRORS`).
        checksums: file name (with ".gz") -> "md5:<hex>" / "sha256:<hex>"; default the official md5s.
    """
    names = names if names is not None else [n for pair in MNIST_FILES.values() for n in pair]
    mirrors = mirrors if mirrors is not None else MNIST_MIRRORS  # looked up at call time, so tests can patch it
    table = checksums if checksums is not None else {k: f"md5:{v}" for k, v in MNIST_GZ_MD5.items()}
    return [RemoteFile(f"{n}.gz", tuple(m + f"{n}.gz" for m in mirrors), table[f"{n}.gz"]) for n in names]


def download_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: tuple[str, ...] | list[str] | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Path]:
    """Download the MNIST files missing from the data folder (as `.gz`, md5-checked).

    Returns:
        Paths of the files downloaded (empty if nothing was missing).

    Raises:
        DownloadError: with URLs, hashes and destinations for fetching the files by hand.
    """
    root = resolve_data_dir(data_dir)
    missing = missing_mnist_files(root)
    if not missing:
        return []
    return download_files(mnist_remotes(missing, mirrors, checksums), root, timeout=timeout)


def _verify(path: Path, name: str, raw: bytes) -> None:
    """Accept the official content: decompressed md5 and size, or the official .gz file itself."""
    md5, size = MNIST_RAW_MD5[name]
    if len(raw) == size and hashlib.md5(raw).hexdigest() == md5:
        return
    if path.name.endswith(".gz") and hashlib.md5(path.read_bytes()).hexdigest() == MNIST_GZ_MD5[f"{name}.gz"]:
        return
    raise DataError(
        f"{path}: content does not match official MNIST (decompressed md5 {hashlib.md5(raw).hexdigest()}, "
        f"{len(raw)} bytes; expected md5 {md5}, {size} bytes). If it is a deliberate custom subset, load it with "
        f"verify=False (CLI --no-verify); otherwise it is corrupt or not MNIST. {_FIX}"
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = False,
    mirrors: tuple[str, ...] | list[str] | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Split, Split]:
    """Load MNIST train and test from the IDX files in the data folder.

    Args:
        data_dir: the data folder (default: see `resolve_data_dir`).
        verify: check the content against the official checksums; False accepts any well-formed IDX files
            (a custom subset, say) and prints a warning.
        download: fetch missing files from `mirrors` first.
        mirrors, checksums, timeout: passed to `download_mnist`.

    Returns:
        (train, test) Splits: images (N, 28, 28) uint8, labels (N,) int64.

    Raises:
        DataError: a file is missing (the message says how to get it), malformed or fails verification.
    """
    root = resolve_data_dir(data_dir)
    missing = missing_mnist_files(root)
    if missing and download:
        download_mnist(root, mirrors=mirrors, checksums=checksums, timeout=timeout)
    elif missing:
        raise DataError(
            f"MNIST files missing from {root}: {', '.join(missing)}. Run `python -m minidann.data download`, "
            "or fetch them by hand.\n" + by_hand_message(mnist_remotes(missing, mirrors, checksums), root)
        )
    if not verify:
        print(
            f"warning: MNIST files in {root} are NOT checked against the official checksums (verify=False); "
            "any well-formed IDX files are accepted.",
            file=sys.stderr,
        )
    splits = []
    for split, (img_name, lbl_name) in MNIST_FILES.items():
        img_path, lbl_path = find_mnist_file(root, img_name), find_mnist_file(root, lbl_name)
        images, img_raw = read_idx(img_path, "images")
        labels, lbl_raw = read_idx(lbl_path, "labels")
        if len(images) != len(labels):
            raise DataError(
                f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels; the {split} "
                f"files must come from the same set. {_FIX}"
            )
        if verify:
            _verify(img_path, img_name, img_raw)
            _verify(lbl_path, lbl_name, lbl_raw)
        splits.append(Split(images, labels.astype(np.int64)))
    return splits[0], splits[1]
