"""The BSDS500 reader on a small tarball with the official layout and hostile members."""

import io
import os
import tarfile

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import io as skio

from minidann.data import DataError, load_backgrounds, read_bsds500_train
from minidann.data.backgrounds import _is_bsds500_train_photo

TRAIN = "BSR/BSDS500/data/images/train/"


def _jpeg(seed, shape=(41, 57, 3)):
    rng = np.random.default_rng(seed)
    return iio.imwrite("<bytes>", rng.integers(0, 256, shape, dtype=np.uint8), extension=".jpg")


def _add(tar, name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _build_tarball(path, hostile=True):
    """Three legitimate train photos (added out of order) plus, if `hostile`, hostile and off-limits members."""
    legit = {f"{TRAIN}{n}.jpg": _jpeg(i) for i, n in enumerate(["300", "100", "200"])}
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "BSR/BSDS500/data/images/val/999.jpg", _jpeg(9))  # right archive, wrong split
        for name, data in legit.items():
            _add(tar, name, data)
        if not hostile:
            return legit
        _add(tar, "../evil.jpg", _jpeg(10))
        _add(tar, f"{TRAIN}../../../../../../evil2.jpg", _jpeg(11))
        _add(tar, f"/{TRAIN}abs.jpg", _jpeg(12))
        _add(tar, f"{TRAIN}link.jpg", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, f"{TRAIN}hard.jpg", kind=tarfile.LNKTYPE, linkname=f"{TRAIN}100.jpg")
        _add(tar, f"{TRAIN}sub/nested.jpg", _jpeg(13))
        _add(tar, f"{TRAIN}notes.txt", b"not a photo")
        _add(tar, f"{TRAIN}huge.jpg", os.urandom(300_000))  # would fail to decode if it were read
    return legit


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_reads_only_legitimate_photos_and_writes_nothing(tmp_path, monkeypatch):
    tgz = tmp_path / "BSR_bsds500.tgz"
    legit = _build_tarball(tgz)
    with tarfile.open(tgz) as tar:  # the hostile names really are in the archive as written
        names = tar.getnames()
    assert f"/{TRAIN}abs.jpg" in names and "../evil.jpg" in names
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _listing(tmp_path)

    bg = read_bsds500_train(tgz, max_member_bytes=200_000, expected_count=3)

    assert _listing(tmp_path) == before
    assert bg.kind == "bsds500" and bg.label == "MNIST-M (BSDS500)"
    assert bg.names == tuple(sorted(legit))
    for name, photo in zip(bg.names, bg.photos, strict=True):
        assert photo.shape == (41, 57, 3) and photo.dtype == np.uint8
        np.testing.assert_array_equal(photo, skio.imread(io.BytesIO(legit[name])))


@pytest.mark.parametrize(
    "name, kind, accepted",
    [
        (f"{TRAIN}1.jpg", tarfile.REGTYPE, True),
        (f"{TRAIN}2.JPG", tarfile.REGTYPE, True),
        (f"{TRAIN}1.jpg", tarfile.SYMTYPE, False),  # a link, even one whose header claims a size
        (f"{TRAIN}1.jpg", tarfile.LNKTYPE, False),
        (f"{TRAIN}1.jpg", tarfile.DIRTYPE, False),
        (f"/{TRAIN}1.jpg", tarfile.REGTYPE, False),
        (f"{TRAIN}../train/1.jpg", tarfile.REGTYPE, False),
        (f"{TRAIN}./1.jpg", tarfile.REGTYPE, False),
        (f"{TRAIN}sub/1.jpg", tarfile.REGTYPE, False),
        (f"{TRAIN}1.png", tarfile.REGTYPE, False),
        ("BSR/BSDS500/data/images/test/1.jpg", tarfile.REGTYPE, False),
    ],
)
def test_member_filter(name, kind, accepted):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, 1000
    assert _is_bsds500_train_photo(info, max_bytes=2000) is accepted
    info.size = 3000
    assert _is_bsds500_train_photo(info, max_bytes=2000) is False


def test_size_cap_and_expected_count(tmp_path):
    tgz = tmp_path / "b.tgz"
    _build_tarball(tgz)
    # With a cap below the legitimate photos' size nothing is accepted.
    with pytest.raises(DataError, match="no .jpg photos"):
        read_bsds500_train(tgz, max_member_bytes=100)
    with pytest.raises(DataError, match="found 3 train photos"):
        read_bsds500_train(tgz, max_member_bytes=200_000, expected_count=200)


def test_corrupt_archive_raises_naming_it(tmp_path):
    tgz = tmp_path / "BSR_bsds500.tgz"
    tgz.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(100))
    with pytest.raises(DataError, match="BSR_bsds500.tgz"):
        read_bsds500_train(tgz)


def test_load_backgrounds_prefers_the_archive(tmp_path):
    bg, reason = load_backgrounds(tmp_path, download=False)
    assert bg.kind == "skimage" and "download disabled" in reason
    assert bg.label == "MNIST-M variant (scikit-image photos)" and len(bg.photos) >= 1
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in bg.photos)

    _build_tarball(tmp_path / "BSR_bsds500.tgz", hostile=False)
    with pytest.raises(DataError, match="expected 200"):  # verify: the real archive has 200 train photos
        load_backgrounds(tmp_path)
    bg, reason = load_backgrounds(tmp_path, verify=False)
    assert bg.kind == "bsds500" and len(bg.photos) == 3 and "BSR_bsds500.tgz" in reason
