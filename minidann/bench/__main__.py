"""Time minidann's DANN training step and its ops, against PyTorch's if asked (prints JSON lines).

    python -m minidann.bench [--device cpu|gpu] [--batch-size 64] [--steps 30] [--kernels fast|reference|both]
                             [--compare-torch] [--threads auto|1|2|1,2] [--ops] [--profile] [--handoff] [--no-memory]
    python -m minidann.bench --ab-pairs 5 [--steps 100] [--threads ...] [--kernels ...]
    python -m minidann.bench --example-memory [--steps N]       (N steps per mode; docs/performance.md uses 300)
    python -m minidann.bench --device gpu --launches [--compare-torch ...]

The step is the example's: :func:`minidann.dann.train_step` in ``dann`` mode (half source, half target;
forward, backward through the GRL, SGD with momentum) on the paper's network.

Interleaved (the default): every implementation asked for runs in this process, taking turns in blocks of 10
steps after a pause, so all see the same machine load. A row per implementation (``"impl"``, ``"kernels"``,
``"threads"``, ``ms_per_step``: the median of ``--steps`` timed steps after a warm-up, memory), with
``--compare-torch`` a ``"ratio"`` row per minidann row (minidann / torch, with ``block_ratios``: its spread block
by block), and with ``--kernels both`` a ``"summary"`` row per thread count: the reference/fast ratio beside the
fast/torch ratio, all from the same run. The reference step is one whole-batch step on one thread.

``--ab-pairs N``: N pairs of separate processes instead, each library alone in a fresh process timing the same
step with batch sampling included (indices from a host generator, gather, preprocess), each pair's ratio and the
median ratio (:mod:`minidann.bench.pairs`).

Peak memory of each implementation is measured in a fresh subprocess (``peak_rss_mb``: the whole process,
libraries included). ``--profile`` adds the time per op and input shape of minidann's one-thread step, with
``--compare-torch`` PyTorch's per aten op beside it. Compare ratios from one run, not absolute times.
``--launches`` (GPU) adds what one step runs on the GPU, counted by PyTorch's profiler: kernels, memsets and
copies per step, minidann's and PyTorch's, with the most frequent kernels (:mod:`minidann.bench.launches`).
``--example-memory`` times nothing: it measures the peak resident memory of the example's whole CPU run
(``--steps`` per mode) against the least a PyTorch version of that run must hold.
"""

from __future__ import annotations

import argparse
import json
import sys

from minidann.backend import GPUUnavailableError, resolve_device
from minidann.dann import batch_rows, halves_evenly
from minidann.dispatch import KERNELS
from minidann.fast.parallel import auto_threads, check_threads

from .launches import launch_counts
from .machine import core_handoff_probe
from .memory import example_memory, peak_rss_mb
from .ops import op_benchmarks
from .pairs import ab_pairs
from .profile import profile_step
from .step import step_benchmark


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minidann.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps (the median is reported)")
    parser.add_argument("--kernels", choices=[*KERNELS, "both"], default="fast",
                        help="the layer of ops minidann's step runs on; both: the reference step (whole batch, one "
                             "thread) and the fast one, interleaved, with their ratio")
    parser.add_argument("--compare-torch", action="store_true", help="time PyTorch's same step side by side")
    parser.add_argument("--ab-pairs", type=int, default=0, metavar="N",
                        help="instead of interleaving: N pairs of separate processes, minidann alone against "
                             "PyTorch alone, batch sampling included; each pair's ratio and the median")
    parser.add_argument("--pairs-malloc", choices=["auto", "tuned", "default"], default="auto",
                        help="with --ab-pairs: auto gives each child the malloc setting it trains under (minidann's "
                             "fast loop tuned, PyTorch glibc's defaults); tuned or default give every child the same")
    parser.add_argument("--torch-tf32", action="store_true",
                        help="GPU: leave PyTorch's default TF32 convolutions on (otherwise PyTorch computes in IEEE "
                             "float32, as minidann's CuPy products do unless CUPY_TF32=1)")
    parser.add_argument("--ops", action="store_true", help="also time forward + backward of single ops")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per op with --ops")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--profile", action="store_true",
                        help="also print the time per op and input shape of a DANN step (one thread; with "
                             "--compare-torch, PyTorch's per aten op too)")
    parser.add_argument("--threads", default="auto",
                        help="the fast step's threads: 1, 2 (the batch's two halves at once, CPU only), 1,2 (both, "
                             "interleaved) or auto (2 on a CPU with two cores or more, as the example); the "
                             "reference step always runs on one")
    parser.add_argument("--handoff", action="store_true",
                        help="also probe what handing memory between CPU cores costs (explains slow spells)")
    parser.add_argument("--launches", action="store_true",
                        help="GPU: also count the kernels, memsets and copies one step runs, minidann's and "
                        "PyTorch's (PyTorch's profiler; needs torch with CUDA)")
    parser.add_argument("--example-memory", action="store_true",
                        help="instead of timing: peak memory of the example's whole run (--steps per mode, CPU) "
                             "and of the least a PyTorch version of that run must do")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps and --repeats must be at least 1, got {args.steps} and {args.repeats}")
    if args.ab_pairs < 0:
        parser.error(f"--ab-pairs must be at least 1 (or 0: interleave in one process), got {args.ab_pairs}")
    if args.batch_size < 2:  # a DANN batch is source rows then target rows: at least one of each
        parser.error(f"--batch-size must be at least 2 (one source and one target image), got {args.batch_size}")
    return args


def parse_threads(value: str, device: str, batch_size: int, kernel_layers: tuple) -> tuple[int, ...] | str:
    """The thread counts of ``--threads`` as a tuple, or the error message (checked before anything is timed).

    The rules are :func:`minidann.fast.parallel.check_threads`'s; the reference layer always times one thread
    (with ``--kernels both`` a 2 applies to the fast step only).
    """
    if value == "auto":
        fast = "fast" in kernel_layers and halves_evenly(batch_size, "dann")
        return (auto_threads(device, "fast") if fast else 1,)
    counts = tuple(dict.fromkeys(n.strip() for n in value.split(",")))  # repeats dropped
    if not set(counts) <= {"1", "2"}:
        return f"--threads {value}: takes 1, 2 or 1,2"
    threads = tuple(int(n) for n in counts)
    layer = "fast" if "fast" in kernel_layers else "reference"
    try:
        for n in threads:
            check_threads(n, device, layer, batch_rows(batch_size, "dann"))
    except ValueError as e:
        return f"--threads {value}: {e}"
    return threads


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.example_memory:
        for row in example_memory(args.steps):
            print(json.dumps(row))
        return 0
    try:
        device, _ = resolve_device(args.device)
    except GPUUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.launches and device != "gpu":
        print("error: --launches counts what a GPU runs: use it with --device gpu", file=sys.stderr)
        return 2
    kernel_layers = ("reference", "fast") if args.kernels == "both" else (args.kernels,)
    threads = parse_threads(args.threads, device, args.batch_size, kernel_layers)
    if isinstance(threads, str):
        print(f"error: {threads}", file=sys.stderr)
        return 2
    if args.ab_pairs:
        for row in ab_pairs(device, args.batch_size, args.steps, args.ab_pairs, threads, kernel_layers,
                            args.pairs_malloc):
            print(json.dumps(row), flush=True)
        return 0
    if args.ops:
        for row in op_benchmarks(device, args.batch_size, args.repeats, kernel_layers):
            print(json.dumps(row))
    if args.handoff and device == "cpu":
        print(json.dumps(core_handoff_probe()))
    rows = step_benchmark(device, args.batch_size, args.steps, args.compare_torch, threads, args.torch_tf32,
                          kernel_layers)
    if not args.no_memory:
        for row in rows:
            if row.get("impl") == "minidann":
                row["peak_rss_mb"] = peak_rss_mb("minidann", device, args.batch_size, args.steps, row["threads"],
                                                 row["kernels"])
            elif row.get("impl") == "torch":
                row["peak_rss_mb"] = peak_rss_mb("torch", device, args.batch_size, args.steps)
    for row in rows:
        print(json.dumps(row))
    if args.profile:
        for row in profile_step(device, args.batch_size, args.steps, args.compare_torch, args.torch_tf32,
                                "reference" if args.kernels == "reference" else "fast"):
            print(json.dumps(row))
    if args.launches:
        for row in launch_counts(device, args.batch_size, torch_tf32=args.torch_tf32):
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
