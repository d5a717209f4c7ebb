"""The BSDS500 reader on members whose content is not what their name says: a PNG named .jpg, CMYK and grey JPEGs."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from minidann.data import DataError, read_bsds500_train

TRAIN = "BSR/BSDS500/data/images/train/"


def _image_bytes(mode, colour, fmt="JPEG", size=(40, 30)):
    b = io.BytesIO()
    Image.new(mode, size, colour).save(b, fmt, quality=95)
    return b.getvalue()


def _tarball(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(TRAIN + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_png_named_jpg_is_refused_naming_the_member(tmp_path):
    tgz = _tarball(tmp_path / "b.tgz", {"1.jpg": _image_bytes("RGB", (10, 200, 30)),
                                        "2.jpg": _image_bytes("RGB", (10, 200, 30), fmt="PNG")})
    with pytest.raises(DataError, match=r"member .*train/2\.jpg is named \.jpg but is not a JPEG"):
        read_bsds500_train(tgz)


def test_cmyk_and_grey_jpegs_become_the_colours_a_viewer_shows(tmp_path):
    tgz = _tarball(tmp_path / "b.tgz", {"cmyk.jpg": _image_bytes("CMYK", (0, 255, 255, 0)),  # red, in CMYK
                                        "grey.jpg": _image_bytes("L", 100)})
    bg = read_bsds500_train(tgz)
    cmyk, grey = dict(zip(bg.names, bg.photos, strict=True)).values()
    assert cmyk.shape == (30, 40, 3) and grey.shape == (30, 40, 3)
    assert np.abs(cmyk.reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 8  # not (0, 255, 255): K was not dropped
    assert np.abs(grey.astype(int) - 100).max() <= 2
