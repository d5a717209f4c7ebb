"""MNIST-M: MNIST digits blended over random patches of colour photos, seeded and reproducible.

Recipe (JMLR p. 23; tf-dann create_mnistm.py), for digit image `digit` (28, 28) and a photo:

    d = 255 * (digit > 0)                       # binarised digit in {0, 255}
    out[i, j, c] = |patch[i, j, c] - d[i, j]|   # patch: a random 28x28x3 window of a random photo

Every random draw comes from one `numpy.random.default_rng(seed)`: first the train images' photo indices, rows
and columns, then the test images' (see `draw_positions`). tf-dann seeded only the photo choice, so its MNIST-M
cannot be rebuilt; here the same digits, photos and seed always give the same bytes. A test image never reuses
the exact (photo, row, column) patch of a train image.

Backgrounds (BSDS500's train photos, or scikit-image's for offline use) come from
:mod:`minidann.data.backgrounds`.

Results are cached as `.npz` in the data folder, keyed by a sha256 of the digits, the decoded photos, the seed and
`RECIPE_VERSION`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._common import DataError, save_npz_atomic
from .backgrounds import BACKGROUND_LABELS, Backgrounds, as_rgb

__all__ = ["RECIPE_VERSION", "MnistM", "draw_positions", "blend", "build_mnistm"]

#: Bump when the recipe or the order of random draws changes, so that old caches are not reused.
RECIPE_VERSION = 1


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
        return BACKGROUND_LABELS[self.backgrounds]


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
        photos = tuple(as_rgb(p, f"photo {i}") for i, p in enumerate(backgrounds))
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
