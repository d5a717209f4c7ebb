"""Data parallelism on a CPU's two cores: each half of the batch on its own thread, gradients averaged.

A loss that is a mean over the rows of a batch is the mean of the losses of its two halves, and so is its
gradient:

    L = 1/N sum_i l_i = 1/2 (L_a + L_b),   L_a, L_b the means over two halves of N/2 rows each,
    dL/dtheta = 1/2 (dL_a/dtheta + dL_b/dtheta).

DANN's loss is two such means (L_y over the source rows, L_d over all rows), so a half that takes half of the
source rows and half of the target rows gives both terms their right weight. Each half runs forward and
backward on its own *replica* of the model: new Parameter objects that share the model's arrays (so the SGD
update, in place, reaches every replica) but keep their own ``.grad`` (so the two threads never write to the
same gradient). The model then gets g = (g_a + g_b) / 2, the full batch's gradient up to float rounding.

This is the fast layer's training step on the CPU (``minidann.kernels("fast")``, the default), whenever the
batch splits into two such halves; the reference layer trains on the whole batch in one forward and one backward
pass (:func:`minidann.dann.train_step`). The halves run at the same time (``threads=2``) or one after the other
(``threads=1``): the same sums in the same order, each half's products on one BLAS thread, so the two give the
same parameters bit for bit, and the number of threads is a matter of speed only. (The whole batch in one pass
rounds differently: the reference step equals this one up to float rounding.)

Why bother on a CPU: in a one-thread step only the matrix products use both cores (OpenBLAS's threads); the
window unfolding, pooling, ReLU and the rest run on one core, and every product's operands move from one core's
caches to the other's. With half a batch per thread, all of the step runs on both cores and each core keeps its
own data. NumPy releases Python's GIL inside array operations, so the two threads do run at the same time
(not quite everywhere: each NumPy call holds the GIL while it sets up, and a few hold it throughout, such as
matmul's vector-matrix products, which the fast convolutions avoid; see docs/performance.md).
BLAS is set to one thread meanwhile: otherwise four BLAS threads would share two cores.

The BLAS setting is process-wide while a step runs (other threads' products get one thread meanwhile); where
minidann cannot reach it (a NumPy whose BLAS is not OpenBLAS, or not on Linux), the halves still give the right
gradient, but each half's products may start BLAS threads of their own, and two threads can be slower than one.
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from ..dispatch import active_kernels
from ..layers import Module
from .tuning import set_blas_threads

#: The thread counts a training step takes: 1, or 2 for the two halves at once (fast kernels, CPU).
THREADS = (1, 2)

_worker: ThreadPoolExecutor | None = None  # one extra thread, started on first use and reused for every step
_worker_pid: int | None = None  # the process that started it
_replicas: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its two replicas, kept between steps


def replicate(model: Module) -> Module:
    """A copy of ``model`` whose Parameters are new objects holding the *same* arrays, with no gradient.

    ``deepcopy`` copies the module tree; the memo tells it that each parameter array is already "copied" as
    itself, so no weight is duplicated.
    """
    memo = {}
    for p in model.parameters():
        memo[id(p.data)] = p.data
        if p.grad is not None:
            memo[id(p.grad)] = None  # not copied: the replica starts without a gradient
    replica = copy.deepcopy(model, memo)
    replica.zero_grad()
    return replica


def mean_of_halves(model: Module, forward_backward: Callable, half_a: tuple, half_b: tuple, threads: int = 2):
    """Run ``forward_backward(replica, *half)`` for both halves; give ``model`` the mean gradient.

    Args:
        model: the model whose parameters receive p.grad = (g_a + g_b) / 2 (None where both halves have none).
        forward_backward: computes a mean loss on its half, calls backward, and returns what it measured.
        half_a, half_b: the arguments after the replica, one tuple per half of the batch.
        threads: 2 runs the halves at once (half b on a worker thread), 1 one after the other on this thread;
            the arithmetic is the same, so is the result.
    Returns:
        (result_a, result_b), the two return values of ``forward_backward``.
    """
    global _worker, _worker_pid
    check_threads(threads, kernels="fast")
    # (a forked child inherits the pool but not its thread: it starts its own)
    if threads == 2 and (_worker is None or _worker_pid != os.getpid()):
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minidann-half")
        _worker_pid = os.getpid()
    replica_a, replica_b = _replicas_of(model)
    replica_a.zero_grad()
    replica_b.zero_grad()
    blas_threads = set_blas_threads(1)  # with threads=1 too: the same products as two threads compute, bit for bit
    future_b = None
    try:
        if threads == 2:
            future_b = _worker.submit(forward_backward, replica_b, *half_b)  # half b on the worker thread
            result_a = forward_backward(replica_a, *half_a)  # half a on this thread, at the same time
            result_b = future_b.result()
        else:
            result_a = forward_backward(replica_a, *half_a)
            result_b = forward_backward(replica_b, *half_b)
    finally:
        if future_b is not None:
            wait([future_b])  # if half a failed, half b must not go on running into the next step
        if blas_threads is not None:
            set_blas_threads(blas_threads)
    for p, pa, pb in zip(model.parameters(), replica_a.parameters(), replica_b.parameters(), strict=True):
        if pa.grad is None and pb.grad is None:
            p.grad = None
        else:
            ga = pa.grad if pa.grad is not None else 0.0
            gb = pb.grad if pb.grad is not None else 0.0
            p.grad = (ga + gb) * 0.5  # a Python float keeps float32 gradients float32
        pa.grad = pb.grad = None
    return result_a, result_b


def check_threads(threads: int, device: str = "cpu", kernels: str | None = None,
                  rows: tuple[int, int] | None = None) -> int:
    """``threads`` if a training step can run with it, else a ValueError that names the problem and the fix.

    The one check of a thread count, used by :func:`minidann.dann.train_step`, the Trainer, the example and the
    benchmark. Two threads run the two halves of the batch at once, so they need the fast kernels, the CPU, and
    a batch whose two groups of rows both halve.

    Args:
        threads: 1 or 2.
        device: "cpu" or "gpu", where the step runs.
        kernels: "fast" or "reference" (None: the active layer, :func:`minidann.active_kernels`).
        rows: (source rows, target rows) of the batch, the two groups each half takes half of (in the ``source``
            and ``target`` modes one of them is 0); None when not known yet.
    Returns:
        ``threads``.
    """
    if isinstance(threads, bool) or threads not in THREADS:
        raise ValueError(f"threads must be 1 or 2 (2: the two halves of every batch at once on two CPU cores), "
                         f"got {threads!r}")
    if threads == 1:
        return threads
    kernels = active_kernels() if kernels is None else kernels
    if kernels != "fast":
        raise ValueError(f"threads 2 runs the fast kernels' two halves of the batch at once; the {kernels} kernels "
                         f"train on the whole batch in one forward and one backward pass, on one thread: use threads "
                         f"1, or the fast kernels (--kernels fast, minidann.kernels(\"fast\"))")
    if device != "cpu":
        raise ValueError(f"threads 2 runs two halves of the batch on two CPU cores; on the {device} use threads 1")
    if rows is not None and (rows[0] % 2 or rows[1] % 2):
        raise ValueError(f"threads 2 splits every batch into two equal halves, each with half of the source and "
                         f"half of the target rows: it needs an even number of each, got {rows[0]} and {rows[1]}; use "
                         f"a batch size divisible by 4 in dann mode (by 2 otherwise), or threads 1")
    return threads


def auto_threads(device: str, kernels: str | None = None) -> int:
    """The thread count to use when none is given: 2 on a CPU with at least two cores under the fast kernels, else 1.

    Safe as a default because the count changes only the speed of a CPU step, not its result (see above).
    ``kernels`` None means the active layer; the reference layer's step is one pass on one thread.
    """
    kernels = active_kernels() if kernels is None else kernels
    return 2 if kernels == "fast" and device == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def _replicas_of(model: Module) -> tuple[Module, Module]:
    """Two replicas of ``model``, made once and reused while they still share every array with it.

    (Copying the module tree costs about 0.5 ms; ``model.to(device)`` or loading a checkpoint gives the model
    new arrays, and then the replicas are made again.)
    """
    params = model.parameters()
    pair = _replicas.get(model)
    if pair is None or not all(r.data is p.data for replica in pair
                               for r, p in zip(replica.parameters(), params, strict=True)):
        pair = _replicas[model] = (replicate(model), replicate(model))
    return pair
