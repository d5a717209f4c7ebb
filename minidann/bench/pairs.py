"""Separate-process A/B pairs: each library alone in a fresh process, timing the same step, batch sampling included.

The interleaved benchmark (:mod:`minidann.bench.step`) runs both libraries in one process, which shares more
than the machine's load: one malloc setting, two thread pools and the caches. Here every measurement is a child
process that imports only what its library needs, trains the way it would in a training loop (each step draws
its batch indices from a host generator, gathers the uint8 images and preprocesses them, then steps), and times
its own steps alone. A *pair* is one minidann child per variant (layer of kernels, threads) and one PyTorch child,
run one after the other; pairs rotate which child goes first, and the median of the pairs' ratios is the figure.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys

import numpy as np

#: images per domain in a child's synthetic training set (the gather reads from a set larger than the caches)
POOL = 10_000
WARMUP = 5


def synthetic_domains(batch: int, seed: int):
    """Two domains of uint8 (POOL, 3, 28, 28) images with labels, their pixel mean, and the two samplers.

    The training loop's own :class:`minidann.train.EpochSampler` draws the indices, batch // 2 per domain.
    """
    from minidann.dann import pixel_mean
    from minidann.train import EpochSampler

    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, (POOL, 3, 28, 28), dtype=np.uint8)
    tgt = rng.integers(0, 256, (POOL, 3, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, POOL)
    n_src = batch // 2
    samplers = EpochSampler(POOL, n_src, rng), EpochSampler(POOL, batch - n_src, rng)
    return src, tgt, labels, pixel_mean(src, tgt), samplers


def _pair_child(impl: str, device: str, batch: int, steps: int, threads: int = 1, kernels_name: str = "fast",
                seed: int = 0, malloc: str = "auto") -> None:
    """Run in a fresh process: ``steps`` timed training steps of one implementation; print one JSON line.

    ``impl``: "minidann" or "torch" (exit status 3 when torch is not importable). Each timed step samples its
    batch (two samplers' indices, gather, :func:`minidann.dann.preprocess`) and trains on it, as the training
    loop does. ``malloc``: "auto" gives each library the host-memory setting it trains under (minidann's fast
    kernels :func:`minidann.fast.tuning.tuned`, everything else glibc's defaults); "tuned" or "default" force one
    (for experiments).
    """
    import contextlib

    from minidann.backend import to_device
    from minidann.dann import build_model, build_optimizer, preprocess, train_step
    from minidann.dispatch import kernels
    from minidann.fast.tuning import tuned

    from .memory import _vm_hwm_mb
    from .step import timed_steps

    src, tgt, labels, mean, (s_src, s_tgt) = synthetic_domains(batch, seed)
    model = build_model(np.random.default_rng(seed), device)
    if impl == "torch":
        from .torch_twin import torch_train_step

        train_on = torch_train_step(device, batch, model)
        del model
        if train_on is None:
            sys.exit(3)
        import torch

        info = {"torch_threads": torch.get_num_threads()}
    else:
        opt = build_optimizer(model)

        def train_on(x_host, y_src):
            with kernels(kernels_name):
                train_step(model, opt, to_device(x_host, device), y_src, "dann", 0.5, 0.01, threads=threads)

        info = {"kernels": kernels_name, "threads": threads}

    def step():
        i, j = s_src.next(), s_tgt.next()
        train_on(preprocess(np.concatenate([src[i], tgt[j]]), mean), labels[i])

    tuned_here = malloc == "tuned" or (malloc == "auto" and impl == "minidann" and kernels_name == "fast"
                                       and device == "cpu")
    times = []
    with tuned() if tuned_here else contextlib.nullcontext():
        for _ in range(WARMUP):
            step()
        faults = timed_steps(step, steps, times)
    print(json.dumps({"impl": impl, **info, "ms_per_step": round(statistics.median(times), 2),
                      "steps": steps, "malloc": "tuned" if tuned_here else "default",
                      "page_faults_per_step": round(faults / steps, 1),
                      "peak_rss_mb": round(_vm_hwm_mb(), 1), "torch_imported": "torch" in sys.modules}))


def run_child(impl: str, device: str, batch: int, steps: int, threads: int = 1, kernels_name: str = "fast",
              malloc: str = "auto") -> dict:
    """One :func:`_pair_child` in a fresh interpreter: its JSON row, or {"error": ...} if it failed."""
    code = (f"from minidann.bench.pairs import _pair_child; _pair_child({impl!r}, {device!r}, {batch}, {steps}, "
            f"{threads}, {kernels_name!r}, malloc={malloc!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_importable() -> bool:
    """Whether a child could import torch (found without importing it here)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def ab_pairs(device: str, batch: int, steps: int, pairs: int, threads=(2,), kernel_layers=("fast",),
             malloc: str = "auto") -> list[dict]:
    """``pairs`` A/B pairs of separate processes: minidann alone (each variant) against PyTorch alone; the rows.

    A variant is (layer of kernels, threads): ("fast", n) for each n in ``threads``, ("reference", 1) if asked
    for. ``malloc``: see :func:`_pair_child` ("auto": each child as it trains). Prints nothing; returns one row
    per child, one per pair and variant with its ratio, and a last row per variant with the median ratio over the
    pairs (the headline figure). Without torch, only minidann's children run, with a note.
    """
    variants = ([("reference", 1)] if "reference" in kernel_layers else []) + (
        [("fast", n) for n in threads] if "fast" in kernel_layers else [])
    with_torch = torch_importable()
    children = [("minidann", k, n) for k, n in variants] + ([("torch", "fast", 1)] if with_torch else [])
    rows, ratios = [], {v: [] for v in variants}
    for p in range(pairs):
        order = children[p % len(children):] + children[:p % len(children)]  # rotate who goes first
        got = {}
        for impl, k, n in order:
            row = run_child(impl, device, batch, steps, n, k, malloc)
            got[(impl, k, n)] = row
            rows.append({"pair": p + 1, **row} if "error" not in row else {"pair": p + 1, "impl": impl, **row})
        t = got.get(("torch", "fast", 1), {}).get("ms_per_step")
        for k, n in variants:
            m = got[("minidann", k, n)].get("ms_per_step")
            if m and t:
                ratios[(k, n)].append(m / t)
                rows.append({"pair": p + 1, "kernels": k, "threads": n, "ratio": round(m / t, 3),
                             "what": "minidann alone / torch alone, ms_per_step, batch sampling included"})
    if not with_torch:
        rows.append({"note": "torch is not importable: only minidann's children ran (pip install torch==2.13.0, "
                             "the CPU build, to compare)"})
    for (k, n), rs in ratios.items():
        if rs:
            rows.append({"ab_pairs": len(rs), "kernels": k, "threads": n,
                         "median_ratio": round(statistics.median(rs), 3),
                         "ratios": [round(r, 3) for r in rs],
                         "what": "minidann / torch, each alone in its own process, median over the pairs"})
    return rows
