"""MNIST-M builder: determinism, the exact recipe, train/test patches, the cache."""

import numpy as np
import pytest

from minidann.data import DataError, blend, build_mnistm, draw_positions, skimage_backgrounds
from minidann.data.backgrounds import Backgrounds


def _inputs(n_train=300, n_test=100):
    rng = np.random.default_rng(123)
    digits = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    digits[digits < 128] = 0  # like MNIST: mostly background, some grey edge values above 0
    photos = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 60, 3), (57, 33, 3), (90, 90, 3))]
    return digits[:n_train], digits[n_train:], photos


def test_same_seed_same_bytes_other_seed_differs():
    train, test, photos = _inputs()
    a = build_mnistm(train, test, photos, seed=0)
    b = build_mnistm(train, test, [p.copy() for p in photos], seed=0)
    c = build_mnistm(train, test, photos, seed=1)
    assert a.train.tobytes() == b.train.tobytes() and a.test.tobytes() == b.test.tobytes()
    np.testing.assert_array_equal(a.train_positions, b.train_positions)
    assert a.train.tobytes() != c.train.tobytes() and a.test.tobytes() != c.test.tobytes()
    assert a.train.shape == (300, 28, 28, 3) and a.test.shape == (100, 28, 28, 3) and a.train.dtype == np.uint8


def test_pixels_follow_the_recipe_exactly():
    train, test, photos = _inputs()
    m = build_mnistm(train, test, photos, seed=5)
    for images, digits, positions in ((m.train, train, m.train_positions), (m.test, test, m.test_positions)):
        for i in (0, 1, 17, len(digits) - 1):
            p, y, x = positions[i]
            patch = photos[p][y : y + 28, x : x + 28, :].astype(np.int64)
            expected = np.abs(patch - 255 * (digits[i][:, :, None] > 0))
            np.testing.assert_array_equal(images[i], expected.astype(np.uint8))


def test_blend_on_a_hand_made_case():
    photo = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3) % 251
    photo = photo.astype(np.uint8)
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 3, 4] = 1  # any non-zero pixel counts as ink
    out = blend(digit, [photo], np.array([[0, 2, 7]]))
    np.testing.assert_array_equal(out[0, 0, 0], photo[2, 7])  # off the digit: the photo unchanged
    np.testing.assert_array_equal(out[0, 3, 4], 255 - photo[5, 11])  # on the digit: inverted


def test_positions_cover_the_photos_and_stay_inside():
    rng = np.random.default_rng(0)
    shapes = [(30, 45), (28, 28), (100, 31)]
    pos = draw_positions(rng, 20_000, shapes)
    assert set(np.unique(pos[:, 0])) == {0, 1, 2}
    for p, (h, w) in enumerate(shapes):
        sel = pos[pos[:, 0] == p]
        assert sel[:, 1].min() == 0 and sel[:, 1].max() == h - 28
        assert sel[:, 2].min() == 0 and sel[:, 2].max() == w - 28


def test_train_and_test_use_different_patches():
    train, test, photos = _inputs(n_train=2000, n_test=1000)
    m = build_mnistm(train, test, photos, seed=0)
    train_keys = {tuple(p) for p in m.train_positions}
    assert not any(tuple(p) in train_keys for p in m.test_positions)
    # Not merely a shifted copy of the train stream either.
    assert not np.array_equal(m.train_positions[:1000], m.test_positions)


def test_too_small_photos_cannot_separate_train_and_test():
    rng = np.random.default_rng(0)
    exclude = np.array([[0, 0, 0]])
    with pytest.raises(DataError, match="too small"):
        draw_positions(rng, 5, [(28, 28)], exclude=exclude)


def test_cache_round_trip_and_key(tmp_path):
    train, test, photos = _inputs()
    bg = Backgrounds("custom", tuple(photos), ("a", "b", "c"))
    first = build_mnistm(train, test, bg, seed=3, cache_dir=tmp_path)
    assert first.cache_path is not None and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path and not list(tmp_path.glob(".*.part"))
    with np.load(first.cache_path, allow_pickle=False) as npz:
        assert str(npz["label"]) == "MNIST-M variant (custom photos)" and int(npz["seed"]) == 3
        assert tuple(npz["background_names"]) == ("a", "b", "c")
    mtime = first.cache_path.stat().st_mtime_ns
    again = build_mnistm(train, test, bg, seed=3, cache_dir=tmp_path)
    assert again.cache_path == first.cache_path and first.cache_path.stat().st_mtime_ns == mtime  # read, not rebuilt
    np.testing.assert_array_equal(again.train, first.train)
    np.testing.assert_array_equal(again.test_positions, first.test_positions)
    # Any change of seed or digits is another cache entry.
    other = build_mnistm(train, test, bg, seed=4, cache_dir=tmp_path)
    changed = train.copy()
    changed[0, 0, 0] ^= 1
    build_mnistm(changed, test, bg, seed=3, cache_dir=tmp_path)
    assert other.cache_path != first.cache_path and len(list(tmp_path.glob("mnistm-*.npz"))) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    train, test, photos = _inputs()
    first = build_mnistm(train, test, photos, seed=0, cache_dir=tmp_path)
    raw = bytearray(first.cache_path.read_bytes())
    if damage == "garbage":
        raw = b"garbage"
    elif damage == "truncated":  # a zip without its central directory: zipfile.BadZipFile
        raw = raw[: len(raw) // 2]
    else:  # one byte of the data changed: a CRC error (BadZipFile) when the member is read
        raw[len(raw) // 3] ^= 0xFF
    first.cache_path.write_bytes(bytes(raw))
    again = build_mnistm(train, test, photos, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.train, first.train)
    with np.load(first.cache_path, allow_pickle=False) as npz:
        assert npz["train"].shape == (300, 28, 28, 3)


def test_skimage_backgrounds_build():
    bg = skimage_backgrounds()
    assert bg.kind == "skimage" and len(bg.photos) == len(bg.names) >= 1
    train, test, _ = _inputs(50, 20)
    m = build_mnistm(train, test, bg, seed=0)
    assert m.label == "MNIST-M variant (scikit-image photos)" and m.background_names == bg.names
