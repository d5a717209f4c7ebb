"""Where the training loop's batches come from: the two domains' training sets and epoch-wise shuffles of them.

:class:`DomainBatches` draws each step's batch as tf-dann's ``batch_generator`` does: indices from shuffled passes
over each training set (:class:`EpochSampler`, reshuffled when fewer than a batch remain), gathered and
preprocessed on the host, source rows first, then target rows. Its state (the permutations and positions) goes
into every checkpoint, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dann import batch_rows, preprocess
from .functions.loss import check_labels

__all__ = ["DomainBatches", "DomainData", "EpochSampler", "check_domain_data"]


@dataclass
class DomainData:
    """The training sets of both domains, preprocessed to uint8 (N, 3, 28, 28) on the host.

    Attributes:
        source_images: (Ns, 3, 28, 28) uint8 (binarised MNIST, see :func:`minidann.dann.prepare_mnist`).
        source_labels: (Ns,) int64.
        target_images: (Nt, 3, 28, 28) uint8 (MNIST-M).
        target_labels: (Nt,) int64; used only by the ``target`` mode (the upper bound); may be empty, (0,), in
            the other modes (an unlabelled target), as may the source labels in ``target`` mode.
            (:func:`check_domain_data` checks all of this.)
        mean: (3,) float32 pixel mean of both training sets.
    """

    source_images: np.ndarray
    source_labels: np.ndarray
    target_images: np.ndarray
    target_labels: np.ndarray
    mean: np.ndarray


def check_domain_data(data: DomainData, mode: str, num_classes: int | None = None) -> None:
    """Images uint8 (N, 3, H, W); labels (N,) integers for every domain the mode reads labels from, and with
    ``num_classes`` in [0, num_classes) (a check on the host, before the loop copies them to the device)."""
    for domain in ("source", "target"):
        images, labels = getattr(data, f"{domain}_images"), np.asarray(getattr(data, f"{domain}_labels"))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DomainData.{domain}_images must be uint8 pixels of shape (N, 3, H, W) (from "
                             f"prepare_mnist / prepare_mnistm; the loop preprocesses them), got {images.dtype} "
                             f"{images.shape}")
        labelled = (domain == "target") == (mode == "target")  # the labels this mode reads: target's only there
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise ValueError(f"DomainData.{domain}_labels must be integer labels of shape (N,), got {labels.dtype} "
                             f"{labels.shape}")
        if (labelled or labels.size) and len(labels) != len(images):
            raise ValueError(f"DomainData: {len(images)} {domain} images but {len(labels)} {domain} labels"
                             + ("" if labelled else f" (in {mode} mode they may be left empty: they are never read)"))
        if labelled and num_classes is not None:
            check_labels(labels, num_classes, f"DomainData.{domain}_labels")


class EpochSampler:
    """Batches of indices from shuffled passes over ``n`` items (tf-dann's ``batch_generator``).

    A new permutation is drawn from ``rng`` at the start and whenever fewer than ``batch_size`` items remain
    (the remainder is dropped, as in tf-dann).
    """

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        if not 0 < batch_size <= n:
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of training images {n}")
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.perm = rng.permutation(n)
        self.pos = 0

    def next(self) -> np.ndarray:
        """The next (batch_size,) int64 indices."""
        if self.pos + self.batch_size > self.n:
            self.perm = self.rng.permutation(self.n)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.perm": self.perm, f"{prefix}.pos": np.int64(self.pos)}

    def check_state(self, state: dict[str, np.ndarray], prefix: str, where: str = "checkpoint") -> None:
        """A ValueError unless ``state`` holds a permutation of this sampler's ``n`` items (nothing is changed)."""
        shape = np.asarray(state.get(f"{prefix}.perm", ())).shape
        if shape != (self.n,):
            got = f"a permutation of {shape[0]} items" if len(shape) == 1 else "no permutation"
            raise ValueError(f"sampler {prefix}: {where} has {got}, the data has {self.n} items (was the checkpoint "
                             "made with other data or --limit-train?)")

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.check_state(state, prefix)
        self.perm, self.pos = np.asarray(state[f"{prefix}.perm"]), int(state[f"{prefix}.pos"])


class DomainBatches:
    """The host batches of one mode: x (N, 3, 28, 28) float32, source rows first, and the labelled rows' labels.

    ``dann`` batches are batch_size // 2 source images and the rest target images (train_step relies on that
    order); ``source`` and ``target`` batches come from one domain. Each domain has its own
    :class:`EpochSampler`, drawn from ``rng`` source first. With ``num_classes``, the labels it hands out are
    checked in [0, num_classes) once, here (:func:`check_domain_data`).
    """

    def __init__(self, data: DomainData, mode: str, batch_size: int, rng: np.random.Generator,
                 num_classes: int | None = None):
        check_domain_data(data, mode, num_classes)
        self.data, self.mode = data, mode
        n_src, n_tgt = batch_rows(batch_size, mode)
        self.samplers: dict[str, EpochSampler] = {}
        if n_src:  # (sized by the images: in dann mode the target labels may be missing, they are never read)
            self.samplers["source"] = EpochSampler(len(data.source_images), n_src, rng)
        if n_tgt:
            self.samplers["target"] = EpochSampler(len(data.target_images), n_tgt, rng)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch: x (N, 3, 28, 28) float32 (source rows first) and the labels of the labelled rows."""
        pixels, labels = self.next_pixels()
        return preprocess(pixels, self.data.mean), labels

    def next_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`next`'s batch before preprocessing: (N, 3, 28, 28) uint8 pixels and the labelled rows' labels.

        (On a GPU the training loop copies these, a quarter of the bytes, and preprocesses on the device.)
        """
        d = self.data
        if self.mode == "source":
            i = self.samplers["source"].next()
            return d.source_images[i], d.source_labels[i]
        if self.mode == "target":
            j = self.samplers["target"].next()
            return d.target_images[j], d.target_labels[j]
        i, j = self.samplers["source"].next(), self.samplers["target"].next()
        # target labels are never read in dann mode
        return np.concatenate([d.source_images[i], d.target_images[j]]), d.source_labels[i]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every sampler's permutation and position, keyed ``<domain>.perm`` and ``<domain>.pos``."""
        state = {}
        for name, s in self.samplers.items():
            state.update(s.state_dict(name))
        return state

    def check_state(self, state: dict[str, np.ndarray], where: str = "checkpoint") -> None:
        """A ValueError unless :meth:`load_state_dict` would take ``state``; nothing is changed."""
        for name, s in self.samplers.items():
            s.check_state(state, name, where)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state)
        for name, s in self.samplers.items():
            s.load_state_dict(state, name)
