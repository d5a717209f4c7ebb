"""The photos MNIST-M patches are cut from: the BSDS500 archive reader, scikit-image's photos, and the choice.

- BSDS500: the 200 train photos of `BSR_bsds500.tgz` in the data folder, read from the archive in memory (never
  extracted): only regular `.jpg` members directly under `BSR/BSDS500/data/images/train/`, below a size cap.
  Result: "MNIST-M (BSDS500)", as in the paper.
- scikit-image photos shipped in its wheel, for offline use: "MNIST-M variant (scikit-image photos)". It is not
  the paper's dataset and results on it must say so.

:func:`load_backgrounds` takes BSDS500 when the archive is there (or downloads), else the scikit-image photos.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._common import DataError, resolve_data_dir
from .download import DEFAULT_TIMEOUT, DownloadError, RemoteFile, download_file

__all__ = [
    "BSDS500_FILE",
    "BSDS500_REMOTE",
    "SKIMAGE_PHOTOS",
    "Backgrounds",
    "read_bsds500_train",
    "skimage_backgrounds",
    "load_backgrounds",
]

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
#: Every JPEG file starts with these bytes (SOI and the first marker's 0xFF).
JPEG_MAGIC = b"\xff\xd8\xff"
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

#: What a result built over each kind of backgrounds is called.
BACKGROUND_LABELS = {
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
        return BACKGROUND_LABELS[self.kind]


def as_rgb(image: np.ndarray, name: str) -> np.ndarray:
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
                if data[:3] != JPEG_MAGIC:  # a PNG (or anything else) named .jpg is not a BSDS500 photo
                    raise DataError(f"{tgz}: member {member.name} is named .jpg but is not a JPEG (it starts with "
                                    f"{data[:8]!r}, a JPEG with {JPEG_MAGIC!r}). The archive is not BSDS500 as "
                                    "published: delete it and download it again")
                try:
                    # mode="RGB" converts what the decoder gives: CMYK (4 channels, which dropping K would turn
                    # into wrong colours) and greyscale both become the colours a viewer shows
                    image = iio.imread(data, extension=".jpg", mode="RGB")
                except Exception as e:  # decoders raise many types; any of them means a bad member
                    raise DataError(f"{tgz}: member {member.name} is not a readable JPEG ({e})") from e
                if image.shape[0] * image.shape[1] > MAX_PHOTO_PIXELS:
                    raise DataError(f"{tgz}: member {member.name} is {image.shape[:2]}, too large for a photo")
                found[member.name] = as_rgb(image, f"{tgz}:{member.name}")
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
            photos.append(as_rgb(skio.imread(path), str(path)))
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
