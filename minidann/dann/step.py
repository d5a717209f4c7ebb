"""One DANN training step: forward through G_f and both heads, one backward pass, one SGD update.

One descent step on L_y + L_d gives exactly the paper's three updates: the GRL multiplies the gradient of L_d
that reaches G_f by -lambd, while G_d itself descends L_d with weight 1 (JMLR eq. 13-15 and footnote 6).

:func:`train_step` and :func:`forward_backward` are that step as the reference kernels run it: the whole batch,
one forward and one backward pass. The fast kernels (the default) take a detour on the CPU, fenced off at the end
of this file: the same gradient from the two halves of the batch (:mod:`minidann.fast.parallel`).

Everything here is device-agnostic: the model lives where ``model.to(...)`` put it, batches arrive already on
that device, and :func:`train_step` never waits for the GPU (its statistics stay device arrays).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module, to_numpy
from ..core import Tensor
from ..dispatch import active_kernels, softmax_cross_entropy
from ..fast import parallel
from ..optim import SGD
from .model import DANN
from .preprocessing import domain_labels

#: Training modes: source only (lower bound), DANN, and train on labelled target (upper bound).
MODES = ("source", "dann", "target")


@dataclass
class StepStats:
    """What one :func:`train_step` measured, as 0-d arrays on the model's device (reading them syncs a GPU).

    Attributes:
        label_loss: L_y, mean cross-entropy of G_y on the labelled rows.
        domain_loss: L_d, mean cross-entropy of G_d on all rows (``dann`` mode; None otherwise).
        domain_acc: fraction of rows whose domain G_d got right (``dann`` mode; None otherwise).
    """

    label_loss: object
    domain_loss: object | None = None
    domain_acc: object | None = None

    def to_host(self) -> dict[str, float | None]:
        """The statistics as Python floats (None where absent). On a GPU this waits for the step to finish."""
        return {k: None if v is None else float(to_numpy(v)) for k, v in
                (("label_loss", self.label_loss), ("domain_loss", self.domain_loss), ("domain_acc", self.domain_acc))}


def train_step(model: DANN, optimizer: SGD, x, y_src, mode: str, lambd: float, lr: float,
               threads: int = 1) -> StepStats:
    """One SGD step of ``mode`` on one batch; the unit that ``python -m minidann.bench`` times.

    ``source`` and ``target`` minimise L_y over the whole batch. ``dann`` minimises L_y over the first
    ``len(y_src)`` rows plus L_d over all rows, through the GRL with coefficient ``lambd``: a single descent step
    on L_y + L_d that moves G_f by -(dL_y/dtheta_f - lambd dL_d/dtheta_f), G_y by -dL_y and G_d by -dL_d.

    Under ``minidann.kernels("reference")`` this is one forward and one backward pass over the whole batch
    (:func:`forward_backward`), then the update. Under the fast kernels (the default) on the CPU, the same
    gradient comes from the two halves of the batch (:func:`_forward_backward_in_halves`, at the end of this
    file, and :mod:`minidann.fast.parallel`), equal to the whole batch's up to float rounding.

    No host-device synchronisation happens here: the losses come back as device arrays (see
    :class:`StepStats`), and the labels are either host arrays, which the loss checks on the host and copies, or
    device arrays, which it trusts (see :func:`minidann.functions.softmax_cross_entropy`). On a GPU the domain
    labels are made on the device once per batch split and reused: a step copies only what the caller copies.

    Args:
        model: the :class:`DANN` network, on the same device as ``x``.
        optimizer: SGD over ``model.parameters()``; its ``lr`` is set to ``lr`` before the update.
        x: (N, 3, 28, 28) float32 preprocessed batch on the model's device (array or Tensor). In ``dann`` mode
            the source rows come first, then the target rows.
        y_src: (n_src,) int labels of the first n_src rows (n_src = N except in ``dann`` mode): a host array
            (checked, then copied to the model's device), or on a GPU a device array, not checked there: check it
            on the host before copying it, as :class:`minidann.train.Trainer` does.
        mode: "source", "dann" or "target".
        lambd: lambda_p for the GRL (used in ``dann`` mode only).
        lr: mu_p for this step.
        threads: 1, or 2 with the fast kernels on the CPU (checked by
            :func:`minidann.fast.parallel.check_threads`). The fast step runs its two halves one after the other
            (1) or at once on two cores (2), with the same result bit for bit. A batch whose source or target
            rows are odd in number runs whole; ``threads=2`` refuses it, as do the reference kernels.

    Returns:
        StepStats with device 0-d arrays.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    n_src, n_tgt = _check_batch(model, x, y_src, mode, lambd, lr)
    device = "cpu" if get_array_module(x.data) is np else "gpu"
    kernels = active_kernels()
    parallel.check_threads(threads, device, kernels, (n_src, n_tgt))  # before anything changes

    optimizer.zero_grad()
    if mode == "dann":
        model.grl.lambd = float(lambd)
    if kernels == "fast" and device == "cpu" and n_src % 2 == 0 and n_tgt % 2 == 0:
        stats = _forward_backward_in_halves(model, x, y_src, mode, lambd, threads)  # the fast layer (below)
    else:
        stats = forward_backward(model, x, y_src, mode, lambd)  # the whole batch: one forward, one backward
    optimizer.lr = float(lr)
    optimizer.step()
    return stats


def forward_backward(model: DANN, x: Tensor, y_src, mode: str, lambd: float) -> StepStats:
    """The losses of :func:`train_step` on the batch x (N, 3, 28, 28), their gradients added to each ``.grad``."""
    N, n_src = x.shape[0], len(y_src)
    f = model.features(x)  # (N, 2352), feeds both heads: backward adds the two gradients
    domain_loss = domain_acc = None
    if mode == "dann":
        label_loss = softmax_cross_entropy(model.label_predictor(f[:n_src]), y_src)  # source rows only
        model.grl.lambd = float(lambd)
        d_logits = model.domain_classifier(f)  # (N, 2), through the GRL
        d = _domain_labels_on(d_logits.data, n_src, N - n_src)  # (N,) on the logits' device
        domain_loss = softmax_cross_entropy(d_logits, d)
        loss = label_loss + domain_loss
        domain_acc = _domain_accuracy(d_logits.data, d)  # from the logits already computed
    else:
        loss = label_loss = softmax_cross_entropy(model.label_predictor(f), y_src)
    loss.backward()
    return StepStats(label_loss.data, None if domain_loss is None else domain_loss.data, domain_acc)


def _domain_labels_on(d_logits, n_src: int, n_tgt: int):
    """The domain labels (n_src + n_tgt,) int64 on the device of ``d_logits``: 0 for source rows, then 1.

    On the CPU the host :func:`~minidann.dann.preprocessing.domain_labels`, which the loss copies. On a GPU they
    are constants: made there once per device and batch split (:func:`_device_domain_labels`) and reused, so a
    step copies nothing but its batch to the device.
    """
    xp = get_array_module(d_logits)
    if xp is np:
        return domain_labels(n_src, n_tgt)
    return _device_domain_labels(xp, d_logits.device.id, n_src, n_tgt)


@functools.lru_cache(maxsize=16)  # a few batch splits: the full batch, the halves, a last partial batch
def _device_domain_labels(xp, device_id: int, n_src: int, n_tgt: int):
    """Device int64 (n_src + n_tgt,) domain labels on GPU ``device_id``, made there (no host copy) and shared by
    every step with that split: nothing may write to them (the loss and the accuracy only read them)."""
    with xp.cuda.Device(device_id):
        labels = xp.zeros(n_src + n_tgt, xp.int64)
        labels[n_src:] = 1
    return labels


def _domain_accuracy(d_logits, d):
    """The fraction of rows whose argmax is their domain label: d_logits (N, 2), d (N,) -> 0-d float32.

    On a GPU three launches: argmax, compare, mean, giving count / N rounded once. The CPU keeps the arithmetic
    its published metrics were made with, float32(count) * float32(1 / N), to the bit; the two agree when N is a
    power of two and otherwise may differ in the last bit (one float32 ulp).
    """
    hit = d_logits.argmax(axis=1) == d
    if get_array_module(hit) is np:
        return np.asarray(np.count_nonzero(hit), np.float32) * np.float32(1.0 / len(hit))
    return hit.mean(dtype=np.float32)


def batch_rows(batch_size: int, mode: str) -> tuple[int, int]:
    """(source rows, target rows) of the training loop's batches of ``batch_size`` in ``mode``.

    ``dann`` batches are batch_size // 2 source rows and the rest target rows; ``source`` batches are all
    source rows, ``target`` batches all target rows.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n_src = {"source": batch_size, "dann": batch_size // 2, "target": 0}[mode]
    return n_src, batch_size - n_src


def halves_evenly(batch_size: int, mode: str) -> bool:
    """Whether the training loop's batches of ``batch_size`` in ``mode`` split into the fast step's two halves.

    That needs an even number of source rows and of target rows (:func:`batch_rows`).
    """
    n_src, n_tgt = batch_rows(batch_size, mode)
    return n_src % 2 == 0 and n_tgt % 2 == 0


def _check_batch(model: DANN, x: Tensor, y_src: np.ndarray, mode: str, lambd: float, lr: float) -> tuple[int, int]:
    """(source rows, target rows) of the batch, after checking every argument of :func:`train_step`.

    Checked here, not after a whole forward and backward pass in the optimizer; a refused step changes nothing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    N, n_src = x.shape[0], len(y_src)
    if mode == "dann" and not 0 < n_src < N:
        raise ValueError(f"dann mode needs source rows then target rows: got {n_src} labels for a batch of {N}")
    if mode != "dann" and n_src != N:
        raise ValueError(f"{mode} mode trains on every row: got {n_src} labels for a batch of {N}")
    dtype = next(model.named_parameters())[1].dtype  # (the first parameter: no walk over all of them per step)
    if x.dtype != dtype:
        raise TypeError(f"train_step: x is {x.dtype} but the model's parameters are {dtype}: give the batch in "
                        f"{dtype} (minidann.dann.preprocess returns float32 images; or x.astype(np.float32))")
    if not (math.isfinite(lr) and lr >= 0):  # a negative lr would ascend the loss, a NaN one ruin every weight
        raise ValueError(f"train_step: lr must be a finite number >= 0, got {lr}")
    if mode == "dann" and not math.isfinite(lambd):
        raise ValueError(f"train_step: lambd must be a finite number, got {lambd}")
    return n_src, (N - n_src if mode == "dann" else 0)


# ------------------------------------------------------------------------------------------------------------
# The fast layer's detour (CPU, minidann.kernels("fast")): the whole batch's gradient from its two halves, each
# on its own replica of the model, one after the other or on two cores (minidann/fast/parallel.py).


def _forward_backward_in_halves(model: DANN, x: Tensor, y_src: np.ndarray, mode: str, lambd: float,
                                threads: int) -> StepStats:
    """:func:`forward_backward` of the whole batch, computed as the mean of its two halves' (source and target
    rows both even in number); the model's ``.grad`` gets (g_a + g_b) / 2."""
    half_a, half_b = _split_in_halves(x, y_src, mode)
    a, b = parallel.mean_of_halves(model, forward_backward, (*half_a, mode, lambd), (*half_b, mode, lambd),
                                   threads=threads)
    # the whole batch's statistics: each half's are means over the same shares of source and target rows
    return StepStats(*(None if va is None else (va + vb) * 0.5
                       for va, vb in ((a.label_loss, b.label_loss), (a.domain_loss, b.domain_loss),
                                      (a.domain_acc, b.domain_acc))))


def _split_in_halves(x: Tensor, y_src: np.ndarray, mode: str) -> tuple[tuple, tuple] | None:
    """Two halves of the batch, ((x_a, y_a), (x_b, y_b)), each with half of the source and half of the target rows.

    Each half's mean losses then weigh its rows as the whole batch's do, so (g_a + g_b) / 2 is the whole batch's
    gradient. None when the source rows or the target rows are odd in number (the halves would weigh them unevenly).
    """
    N, n_src = x.shape[0], len(y_src)
    n_tgt = N - n_src if mode == "dann" else 0
    if n_src % 2 or n_tgt % 2:
        return None
    hs, ht = n_src // 2, n_tgt // 2
    rows_a = np.r_[0:hs, n_src:n_src + ht]
    rows_b = np.r_[hs:n_src, n_src + ht:N]
    return (Tensor(x.data[rows_a]), y_src[:hs]), (Tensor(x.data[rows_b]), y_src[hs:])
