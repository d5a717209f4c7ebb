"""MNIST-M: MNIST digits blended over random patches of colour photos, seeded and reproducible.

Recipe (JMLR p. 23; tf-dann create_mnistm.py), for digit image `digit` (28, 28) and a photo:

    d = 255 * (digit > 0)                       # binarised digit in {0, 255}
    out[i, j, c] = |patch[i, j, c] - d[i, j]|   # patch: a random 28x28x3 window of a random photo

Every random draw comes from one `numpy.random.default_rng(seed)`: first the train images' photo indices, rows
and columns, then the test images' (see `draw_positions`). tf-dann seeded only the photo choice, so its MNIST-M
cannot be rebuilt; here the same digits, photos and seed always give the same bytes. A test image never reuses
the exact (photo, row, column) patch of a train image.

Backgrounds:
- BSDS500: the 200 train photos of `BSR_bsds500.tgz` in the data folder, read from the archive in memory (never
  extracted): only regular `.jpg` members directly under `BSR/BSDS500/data/images/train/`, below a size cap.
  Result: "MNIST-M (BSDS500)", as in the paper.
- scikit-image photos shipped in its wheel, for offline use: "MNIST-M variant (scikit-image photos)". It is not
  the paper's dataset and results on it must say so.

Results are cached as `.npz` in the data folder, keyed by a sha256 of the digits, the decoded photos, the seed and
`RECIPE_VERSION`.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._common import DataError, resolve_data_dir, save_npz_atomic
from .download import DEFAULT_TIMEOUT, DownloadError, RemoteFile, download_file

__all__ = [
    "RECIPE_VERSION",
    "BSDS500_FILE",
    "BSDS500_REMOTE",
    "SKIMAGE_PHOTOS",
    "Backgrounds",
    "MnistM",
    "read_bsds500_train",
    "skimage_backgrounds",
    "load_backgrounds",
    "draw_positions",
    "blend",
    "build_mnistm",
]

#: Bump when the recipe or the order of random draws changes, so that old caches are not reused.
RECIPE_VERSION = 1

BSDS500_FILE = "BSR_bsds500.tgz"
BSDS500_TRAIN_DIR = "BSR/BSDS500/data/images/train/"
BSDS500_TRAIN_COUNT = 200
#: Berkeley publishes no checksum for the archive; the download is checked by its exact size (paper.md), and
#: reading it checks that it holds the 200 train JPEGs.
BSDS500_REMOTE = RemoteFile(
    BSDS500_FILE,
    (
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
        "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
    ),
    "size:70763455",
)
#: BSDS500 JPEGs are 481x321, about 20-150 KB; a member above this cap is not a BSDS500 photo.
MAX_JPEG_BYTES = 4 << 20
MAX_PHOTO_PIXELS = 4096 * 4096

#: Colour photos that scikit-image ships inside its wheel (paper.md), in this fixed order. The files are read
#: straight from the installed `skimage/data` folder, so nothing is downloaded; a missing one is skipped.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)

_LABELS = {
    "bsds500": "MNIST-M (BSDS500)",
    "skimage": "MNIST-M variant (scikit-image photos)",
    "custom": "MNIST-M variant (custom photos)",
}


@dataclass(frozen=True)
class Backgrounds:
    """The photos MNIST-M patches are cut from.

    Attributes:
        kind: "bsds500", "skimage" or "custom".
        photos: each (H, W, 3) uint8 with H, W >= 28.
        names: one name per photo (archive member or file name).
    """

    kind: str
    photos: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @property
    def label(self) -> str:
        """"MNIST-M (BSDS500)", "MNIST-M variant (scikit-image photos)" or "MNIST-M variant (custom photos)"."""
        return _LABELS[self.kind]


@dataclass(frozen=True)
class MnistM:
    """A built MNIST-M.

    Attributes:
        train, test: (N, 28, 28, 3) uint8 images, in the order of the digits they were built from.
        train_positions, test_positions: (N, 3) int64 rows (photo index, top row, left column) of each patch.
        backgrounds: "bsds500", "skimage" or "custom".
        background_names: the photos, in the order `photo index` refers to.
        seed: the seed of the one generator all draws came from.
        cache_path: the cache file read or written, or None.
    """

    train: np.ndarray
    test: np.ndarray
    train_positions: np.ndarray
    test_positions: np.ndarray
    backgrounds: str
    background_names: tuple[str, ...]
    seed: int
    cache_path: Path | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return _LABELS[self.backgrounds]


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """(H, W, 3) uint8 from a decoded photo; grey is repeated to 3 channels, alpha dropped."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"{name}: decoded to {image.dtype}, expected 8-bit pixels")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"{name}: decoded to shape {image.shape}, expected an (H, W, 3) colour photo")
    if image.shape[0] < 28 or image.shape[1] < 28:
        raise DataError(f"{name}: {image.shape[0]}x{image.shape[1]} is smaller than a 28x28 patch")
    return np.ascontiguousarray(image[:, :, :3])


def _is_bsds500_train_photo(member: tarfile.TarInfo, max_bytes: int) -> bool:
    """Accept only a regular file directly in the train folder, named *.jpg, with no path tricks, under the cap."""
    name = member.name
    if not member.isreg():  # symlinks, hard links, devices, folders
        return False
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        return False
    if posixpath.normpath(name) != name:  # "a//b", "a/./b" and the like
        return False
    if not name.startswith(BSDS500_TRAIN_DIR) or "/" in name[len(BSDS500_TRAIN_DIR) :]:
        return False
    return name.lower().endswith(".jpg") and 0 < member.size <= max_bytes


def read_bsds500_train(
    tgz: str | os.PathLike, *, max_member_bytes: int = MAX_JPEG_BYTES, expected_count: int | None = None
) -> Backgrounds:
    """Read the BSDS500 train photos from the archive, in memory, never extracting anything.

    Args:
        tgz: path of `BSR_bsds500.tgz` (or a tarball with the same layout).
        max_member_bytes: members larger than this are ignored.
        expected_count: if given, raise unless exactly this many photos were found (200 for the real archive).

    Returns:
        Backgrounds of kind "bsds500", photos sorted by member name (so the archive's member order does not
        matter), each (H, W, 3) uint8.

    Raises:
        DataError: the archive cannot be read, an accepted member is not a decodable colour photo, or the count
            differs from `expected_count`.
    """
    # imageio comes with scikit-image. Naming the format limits decoding to the JPEG decoder, so a hostile
    # member is never handed to the other plugins (DICOM, TIFF, ...) that format sniffing would try.
    import imageio.v3 as iio

    tgz = Path(tgz)
    found: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(tgz, "r:*") as tar:
            for member in tar:
                if not _is_bsds500_train_photo(member, max_member_bytes):
                    continue
                f = tar.extractfile(member)
                data = f.read(max_member_bytes + 1) if f is not None else b""
                if len(data) != member.size:
                    raise DataError(f"{tgz}: member {member.name} is truncated")
                try:
                    image = iio.imread(data, extension=".jpg")
                except Exception as e:  # decoders raise many types; any of them means a bad member
                    raise DataError(f"{tgz}: member {member.name} is not a readable JPEG ({e})") from e
                if image.shape[0] * image.shape[1] > MAX_PHOTO_PIXELS:
                    raise DataError(f"{tgz}: member {member.name} is {image.shape[:2]}, too large for a photo")
                found[member.name] = _as_rgb(image, f"{tgz}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tgz}: cannot read the archive ({e}). Delete it and download it again.") from e
    if expected_count is not None and len(found) != expected_count:
        raise DataError(
            f"{tgz}: found {len(found)} train photos under {BSDS500_TRAIN_DIR}, expected {expected_count}. "
            "The archive is incomplete or not BSDS500: delete it and download it again (or pass verify=False)."
        )
    if not found:
        raise DataError(f"{tgz}: no .jpg photos under {BSDS500_TRAIN_DIR}; is it BSR_bsds500.tgz?")
    names = tuple(sorted(found))
    return Backgrounds("bsds500", tuple(found[n] for n in names), names)


def skimage_backgrounds() -> Backgrounds:
    """The colour photos scikit-image ships in its wheel (`SKIMAGE_PHOTOS`, those present).

    Returns:
        Backgrounds of kind "skimage".

    Raises:
        DataError: none of the photos could be read.
    """
    import skimage.data
    from skimage import io as skio

    folder = Path(skimage.data.__file__).parent
    photos, names = [], []
    for name in SKIMAGE_PHOTOS:
        path = folder / name
        if not path.is_file():  # another scikit-image version may ship fewer photos: use what is there
            continue
        try:
            photos.append(_as_rgb(skio.imread(path), str(path)))
        except Exception as e:  # a photo we cannot use is skipped, not fatal
            print(f"warning: skipping background {path}: {e}", file=sys.stderr)
            continue
        names.append(name)
    if not photos:
        raise DataError(f"no scikit-image photos found in {folder}; reinstall scikit-image or provide BSDS500")
    return Backgrounds("skimage", tuple(photos), tuple(names))


def load_backgrounds(
    data_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    no_download_reason: str = "download disabled",
) -> tuple[Backgrounds, str]:
    """BSDS500 if the archive is in the data folder (or downloads), else the scikit-image photos.

    Args:
        data_dir: the data folder.
        verify: require the 200 train photos of the real archive.
        download: try to download the archive when it is missing.
        timeout: download timeout in seconds.
        no_download_reason: how `reason` explains a download that was not attempted.

    Returns:
        (backgrounds, reason): reason says in one sentence which photos were chosen and why.

    Raises:
        DataError: the archive is present but unreadable or incomplete (fix or delete it).
    """
    root = resolve_data_dir(data_dir)
    tgz = root / BSDS500_FILE
    if tgz.is_file():
        expected = BSDS500_TRAIN_COUNT if verify else None
        return read_bsds500_train(tgz, expected_count=expected), f"BSDS500 train photos from {tgz}"
    if download:
        try:
            download_file(BSDS500_REMOTE, root, timeout=timeout)
            expected = BSDS500_TRAIN_COUNT if verify else None
            return read_bsds500_train(tgz, expected_count=expected), f"BSDS500 train photos downloaded to {tgz}"
        except DownloadError:
            why = f"{tgz} not found and the download failed"
    else:
        why = f"{tgz} not found ({no_download_reason})"
    return skimage_backgrounds(), f"{why}; using the scikit-image photos (an MNIST-M variant)"


def draw_positions(
    rng: np.random.Generator,
    n: int,
    shapes: Sequence[tuple[int, int]] | np.ndarray,
    exclude: np.ndarray | None = None,
    max_rounds: int = 100,
) -> np.ndarray:
    """Draw a photo and a 28x28 patch position for each of `n` images.

    Draw order (part of the recipe; changing it needs a new RECIPE_VERSION): n photo indices, then n rows, then n
    columns; then, if `exclude` is given, redraws of the clashing images in the same order until none is left.

    Args:
        rng: the generator all draws come from.
        n: number of images.
        shapes: (P, 2) photo heights and widths.
        exclude: (M, 3) positions that must not be drawn again (the train patches, when drawing test ones).
        max_rounds: give up after this many redraw rounds (only tiny photos can get there).

    Returns:
        (n, 3) int64 rows (photo index, top row, left column), with 0 <= row <= H - 28 and 0 <= col <= W - 28.
    """
    shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)

    def draw(k: int) -> np.ndarray:
        photo = rng.integers(0, len(shapes), size=k)
        row = rng.integers(0, shapes[photo, 0] - 27)  # high is exclusive: rows 0 .. H - 28
        col = rng.integers(0, shapes[photo, 1] - 27)
        return np.stack([photo, row, col], axis=1).astype(np.int64)

    positions = draw(n)
    if exclude is None or len(exclude) == 0:
        return positions
    hmax, wmax = int(shapes[:, 0].max()), int(shapes[:, 1].max())

    def keys(p: np.ndarray) -> np.ndarray:  # one integer per (photo, row, col)
        return (p[:, 0] * hmax + p[:, 1]) * wmax + p[:, 2]

    taken = np.unique(keys(np.asarray(exclude, dtype=np.int64)))
    for _ in range(max_rounds):
        clash = np.flatnonzero(np.isin(keys(positions), taken))
        if clash.size == 0:
            return positions
        positions[clash] = draw(clash.size)
    raise DataError("the photos are too small to give every test image a patch unused by the train images")


def blend(digits: np.ndarray, photos: Sequence[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Blend each digit over its patch: out = |patch - 255 * (digit > 0)|.

    Vectorised: one pass per photo gathers all of its patches at once through a strided window view (no copy of
    the photo, no Python loop per image).

    Args:
        digits: (N, 28, 28) uint8 MNIST digits.
        photos: P photos, each (H, W, 3) uint8.
        positions: (N, 3) (photo index, top row, left column) from `draw_positions`.

    Returns:
        (N, 28, 28, 3) uint8 MNIST-M images.
    """
    digits = np.asarray(digits)
    positions = np.asarray(positions, dtype=np.int64)
    if digits.ndim != 3 or digits.shape[1:] != (28, 28) or len(positions) != len(digits):
        raise ValueError(f"digits must be (N, 28, 28) with N = len(positions); got {digits.shape}, {positions.shape}")
    out = np.empty((len(digits), 28, 28, 3), dtype=np.uint8)
    d = np.where(digits > 0, 255, 0).astype(np.int16)  # (N, 28, 28) binarised digit in {0, 255}
    for p, photo in enumerate(photos):
        sel = np.flatnonzero(positions[:, 0] == p)
        if sel.size == 0:
            continue
        # windows[r, c] is the (28, 28, 3) patch whose top-left corner is (r, c): a view, no copy.
        windows = sliding_window_view(photo, (28, 28, 3))[:, :, 0]  # (H - 27, W - 27, 28, 28, 3)
        patch = windows[positions[sel, 1], positions[sel, 2]].astype(np.int16)  # (k, 28, 28, 3) gathered
        out[sel] = np.abs(patch - d[sel, :, :, None]).astype(np.uint8)  # out = |patch - d|, in [0, 255]
    return out


def _cache_key(train_digits: np.ndarray, test_digits: np.ndarray, bg: Backgrounds, seed: int) -> str:
    """sha256 over the recipe version, the seed, the background kind, the digits and the decoded photos."""
    h = hashlib.sha256(f"minidann-mnistm|v{RECIPE_VERSION}|seed={seed}|{bg.kind}|".encode())
    for a in (train_digits, test_digits, *bg.photos):
        h.update(f"{a.dtype.str}{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _load_cache(path: Path, key: str, n_train: int, n_test: int) -> dict[str, np.ndarray] | None:
    """The cached arrays if `path` is a complete cache for `key`, else None (a damaged cache is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception:  # truncated, a flipped byte (zipfile.BadZipFile, zlib.error), not an .npz: a cache is rebuilt
        return None
    try:
        ok = (
            str(arrays["key"]) == key
            and arrays["train"].shape == (n_train, 28, 28, 3)
            and arrays["test"].shape == (n_test, 28, 28, 3)
            and arrays["train_positions"].shape == (n_train, 3)
            and arrays["test_positions"].shape == (n_test, 3)
        )
    except KeyError:
        return None
    return arrays if ok else None


def build_mnistm(
    train_digits: np.ndarray,
    test_digits: np.ndarray,
    backgrounds: Backgrounds | Sequence[np.ndarray],
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> MnistM:
    """Build (or load from the cache) MNIST-M train and test from MNIST digits.

    All randomness comes from `numpy.random.default_rng(seed)`: train positions first, then test positions
    (which avoid the train patches). The same digits, photos and seed give identical bytes.

    Args:
        train_digits: (N, 28, 28) uint8 MNIST train images.
        test_digits: (M, 28, 28) uint8 MNIST test images.
        backgrounds: a `Backgrounds`, or a sequence of (H, W, 3) uint8 photos (recorded as "custom").
        seed: the seed.
        cache_dir: folder for the cache file `mnistm-<kind>-seed<seed>-<key>.npz`; None builds without caching.
            A folder that cannot be written only costs the cache (a warning is printed).

    Returns:
        MnistM with images (N, 28, 28, 3) and (M, 28, 28, 3) uint8, the chosen patch positions, and which
        backgrounds were used.
    """
    if not isinstance(backgrounds, Backgrounds):
        photos = tuple(_as_rgb(p, f"photo {i}") for i, p in enumerate(backgrounds))
        backgrounds = Backgrounds("custom", photos, tuple(f"photo {i}" for i in range(len(photos))))
    if not backgrounds.photos:
        raise DataError("no background photos")
    train_digits = np.ascontiguousarray(train_digits, dtype=np.uint8)
    test_digits = np.ascontiguousarray(test_digits, dtype=np.uint8)
    seed = int(seed)
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(train_digits, test_digits, backgrounds, seed)
        cache_path = Path(cache_dir) / f"mnistm-{backgrounds.kind}-seed{seed}-{key[:16]}.npz"
        cached = _load_cache(cache_path, key, len(train_digits), len(test_digits)) if cache_path.is_file() else None
        if cached is not None:
            return MnistM(
                cached["train"], cached["test"], cached["train_positions"].astype(np.int64),
                cached["test_positions"].astype(np.int64), backgrounds.kind, backgrounds.names, seed, cache_path,
            )

    rng = np.random.default_rng(seed)
    shapes = [p.shape[:2] for p in backgrounds.photos]
    train_pos = draw_positions(rng, len(train_digits), shapes)
    test_pos = draw_positions(rng, len(test_digits), shapes, exclude=train_pos)
    train = blend(train_digits, backgrounds.photos, train_pos)
    test = blend(test_digits, backgrounds.photos, test_pos)

    if cache_path is not None:
        arrays = {
            "train": train, "test": test, "train_positions": train_pos, "test_positions": test_pos,
            "key": np.array(key), "recipe_version": np.array(RECIPE_VERSION), "seed": np.array(seed),
            "backgrounds": np.array(backgrounds.kind), "label": np.array(backgrounds.label),
            "background_names": np.array(backgrounds.names),
        }
        try:
            save_npz_atomic(cache_path, arrays)  # uncompressed: photo noise barely compresses, writing stays fast
        except OSError as e:
            print(f"warning: could not write the MNIST-M cache {cache_path} ({e}); continuing without it",
                  file=sys.stderr)
            cache_path = None
    return MnistM(train, test, train_pos, test_pos, backgrounds.kind, backgrounds.names, seed, cache_path)
