"""What identifies the data of a run, so that a resume can check it trains on the data it started with.

::

    pair = load_digits_pair(seed=0)
    saved = data_identity(pair, seed=0, limit_train=1000, pixel_mean=mean)   # stored in the checkpoint (JSON)
    ...
    why = describe_data_difference(saved, data_identity(pair_now, seed=0, limit_train=1000, pixel_mean=mean_now))
    if why:
        raise SystemExit(f"the data changed since the checkpoint: {why}")

The identity is a small JSON-ready dict: sha256 digests of the MNIST and MNIST-M image and label arrays (as
decoded, so a re-compressed copy of the same files keeps them), the split sizes, the MNIST source (full or the
embedded subset), the backgrounds (BSDS500, scikit-image or custom photos) and the seed of the MNIST-M draws, the
pixel mean, the limits on the set sizes, and the data folder with the rule that chose it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ._common import arrays_sha256, data_dir_origin

__all__ = ["IDENTITY_FORMAT", "data_identity", "describe_data_difference"]

IDENTITY_FORMAT = 1

_SOURCES = {"full": "full MNIST", "embedded": "the embedded MNIST subset"}
_BACKGROUNDS = {"bsds500": "BSDS500 photos", "skimage": "scikit-image photos", "custom": "custom photos"}


def _split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    return arrays_sha256({"images": np.asarray(images), "labels": np.asarray(labels)})


def data_identity(pair, *, seed: int, data_dir: str | os.PathLike | None = None, limit_train: int = 0,
                  limit_test: int = 0, pixel_mean: Sequence[float] | np.ndarray | None = None,
                  verify: bool | None = None) -> dict:
    """The identity of the data of a run, as plain JSON values.

    Args:
        pair: the :class:`~minidann.data.DigitsPair` from ``load_digits_pair`` (its full splits are hashed).
        seed: the seed MNIST-M was built with.
        data_dir: the ``data_dir`` given to ``load_digits_pair`` (None: the default folder, resolved here).
        limit_train, limit_test: how many images of each split the run uses (0: all).
        pixel_mean: (3,) the per-channel mean the run subtracts.
        verify: whether the files were checked against their official checksums.

    Returns:
        {"format", "mnist": {"source", "train", "test", "train_count", "test_count"}, "mnistm": {"train", "test"},
        "backgrounds": {"kind", "seed"}, "pixel_mean", "limit_train", "limit_test", "verified", "data_dir",
        "data_dir_origin"}; the digests are sha256 hex strings of the decoded arrays.
    """
    root, origin = data_dir_origin(data_dir)
    return {
        "format": IDENTITY_FORMAT,
        "mnist": {
            "source": pair.source,
            "train": _split_digest(pair.mnist_train.images, pair.mnist_train.labels),
            "test": _split_digest(pair.mnist_test.images, pair.mnist_test.labels),
            "train_count": len(pair.mnist_train), "test_count": len(pair.mnist_test),
        },
        "mnistm": {
            "train": _split_digest(pair.mnistm_train.images, pair.mnistm_train.labels),
            "test": _split_digest(pair.mnistm_test.images, pair.mnistm_test.labels),
        },
        "backgrounds": {"kind": pair.backgrounds, "seed": int(seed)},
        "pixel_mean": None if pixel_mean is None else [float(m) for m in np.asarray(pixel_mean).ravel()],
        "limit_train": int(limit_train), "limit_test": int(limit_test),
        "verified": verify,
        "data_dir": str(root.absolute()), "data_dir_origin": origin,
    }


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


_MISSING = object()


def describe_data_difference(saved: dict, now: dict) -> str | None:
    """How the data of `now` differ from `saved` (two :func:`data_identity` dicts), in words; None if they do not.

    Entries that `saved` lacks (an identity written by an older minidann) are not compared. The data folder
    and the `verified` flag alone are no difference (the same arrays may move, or be loaded without the checksum
    check); when something else differs, the folders are named too, as the likely reason.

    Returns:
        e.g. "the MNIST-M train and test images differ (backgrounds: scikit-image photos there, BSDS500 photos
        now); pixel mean [0.42, 0.44, 0.41] there, [0.45, 0.46, 0.42] now (data folder /a there, /b now)", or None.
    """
    diffs: list[str] = []

    def pair(*keys):
        a, b = _get(saved, *keys), _get(now, *keys)
        return (a, b) if a is not _MISSING and a != b else None

    if d := pair("mnist", "source"):
        diffs.append(f"MNIST: {_SOURCES.get(d[0], d[0])} there, {_SOURCES.get(d[1], d[1])} now")
    for what, key in (("MNIST", "mnist"), ("MNIST-M", "mnistm")):
        changed = [split for split in ("train", "test") if pair(key, split)]
        if changed:
            text = f"the {what} {' and '.join(changed)} {'images' if key == 'mnistm' else 'digits'} differ"
            if key == "mnist":
                counts = [f"{_get(saved, key, s + '_count')} {s} there, {_get(now, key, s + '_count')} now"
                          for s in changed if pair(key, s + "_count")]
                text += f" ({'; '.join(counts)})" if counts else " (same counts, other images or labels)"
            else:
                extra = []
                if d := pair("backgrounds", "kind"):
                    extra.append(f"backgrounds: {_BACKGROUNDS.get(d[0], d[0])} there, {_BACKGROUNDS.get(d[1], d[1])} "
                                 "now")
                if d := pair("backgrounds", "seed"):
                    extra.append(f"seed {d[0]} there, {d[1]} now")
                if not extra and not any(pair("mnist", s) for s in changed):
                    extra.append("other background photos of the same kind")
                text += f" ({'; '.join(extra)})" if extra else ""
            diffs.append(text)
    for key, words in (("limit_train", "--limit-train"), ("limit_test", "--limit-test")):
        if d := pair(key):
            diffs.append(f"{words} {d[0]} there, {d[1]} now")
    if d := pair("pixel_mean"):
        def fmt(m):
            return "none" if m is None else "[" + ", ".join(f"{v:.4f}" for v in m) + "]"
        diffs.append(f"pixel mean {fmt(d[0])} there, {fmt(d[1])} now")
    if not diffs:
        return None
    text = "; ".join(diffs)
    if d := pair("data_dir"):
        text += f" (data folder {d[0]} there, {d[1]} now)"
    return text
