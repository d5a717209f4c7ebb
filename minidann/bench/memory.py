"""Peak memory, each measured in a fresh process: one implementation's step, and the example's whole run.

``peak_rss_mb`` is the resident high-water mark (VmHWM, Linux) of a child process: the whole process, libraries
included. The ``_*_child`` functions are what those children run (``python -c "from minidann.bench.memory import
..."``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .step import minidann_step
from .torch_twin import _torch_network, torch_step


def _rss_child(impl: str, device: str, batch: int, steps: int, threads: int = 1, kernels_name: str = "fast") -> None:
    """Run in a fresh process: build one implementation's step, run it, print peak RSS in MB (exit 3: no torch)."""
    step, model = minidann_step(device, batch, threads=threads, kernels_name=kernels_name)
    if impl == "torch":
        step = torch_step(device, batch, model)
        del model  # torch's run should not carry minidann's arrays
        if step is None:
            sys.exit(3)
    for _ in range(steps):
        step()
    print(_vm_hwm_mb())


def _vm_hwm_mb() -> float:
    """This process's resident high-water mark (VmHWM, Linux) in MB.

    (ru_maxrss would include the parent's, inherited at fork.)
    """
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


#: the example whose whole run --example-memory measures (present in a clone of the repository)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist_to_mnistm.py"


def _example_child(argv: list[str]) -> None:
    """Run in a fresh process: the example with ``argv``, then print this process's peak RSS in MB."""
    import runpy

    sys.argv = [str(EXAMPLE), *argv]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    print(_vm_hwm_mb())


def _torch_example_floor_child(steps: int, limit_train: int, limit_test: int) -> None:
    """Run in a fresh process: what any PyTorch version of the example must at least do; print peak RSS in MB.

    That is: import torch, load and preprocess the example's data (its own ``load_data``), train the network
    ``steps`` steps source-only and ``steps`` steps with DANN at batch 64 (32 + 32), and classify both test sets
    once per mode. The example does all of this and more (evaluations every 1,000 steps, the proxy A-distance,
    plots, checkpoints), so a PyTorch version of the whole run needs at least this much memory.
    """
    import importlib.util

    import torch

    from minidann.dann import build_model, preprocess

    spec = importlib.util.spec_from_file_location("mnist_to_mnistm", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.parse_args(["--device", "cpu"])
    cfg = {"data": args.data, "data_used": None, "data_dir": args.data_dir, "verify": not args.no_verify,
           "limit_train": limit_train, "limit_test": limit_test}
    _, train, test = example.load_data(cfg)
    rng = np.random.default_rng(0)
    ce = torch.nn.functional.cross_entropy
    d = torch.cat([torch.zeros(32), torch.ones(32)]).long()

    def batch(images, labels, n):
        i = rng.integers(0, len(labels), n)
        return torch.from_numpy(preprocess(images[i], train.mean)), torch.from_numpy(labels[i].astype(np.int64))

    for mode in ("source", "dann"):
        feat, label, domain, grad_reverse = _torch_network(build_model(np.random.default_rng(0)), "cpu")
        opt = torch.optim.SGD([p for m in (feat, label, domain) for p in m.parameters()], lr=0.01, momentum=0.9)
        for _ in range(steps):
            if mode == "source":
                x, y = batch(train.source_images, train.source_labels, 64)
                loss = ce(label(feat(x)), y)
            else:
                (xs, y), (xt, _) = (batch(train.source_images, train.source_labels, 32),
                                    batch(train.target_images, train.target_labels, 32))
                f = feat(torch.cat([xs, xt]))
                loss = ce(label(f[:32]), y) + ce(domain(grad_reverse(f, 0.5)), d)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for images in (test.source_images, test.target_images):
                for i in range(0, len(images), 128):
                    label(feat(torch.from_numpy(preprocess(images[i : i + 128], train.mean)))).argmax(1)
    print(_vm_hwm_mb())


def example_memory(steps: int, limit_train: int = 0, limit_test: int = 0) -> list[dict]:
    """Peak resident memory of the example's run and a lower bound of PyTorch's for the same run (CPU).

    minidann's row is the whole example (``--device cpu --steps steps``: both modes, evaluations, proxy
    A-distance, plots, checkpoints); torch's is :func:`_torch_example_floor_child`, the part of that run any
    PyTorch version must do too. minidann using no more than that floor means no more than PyTorch's whole run.
    """
    import importlib.util
    import subprocess
    import tempfile

    if not EXAMPLE.is_file():
        return [{"error": f"{EXAMPLE} not found: --example-memory runs the example of a clone of the repository"}]
    limits = [f for flag, n in (("--limit-train", limit_train), ("--limit-test", limit_test)) if n
              for f in (flag, str(n))]

    def run(code: str) -> tuple[float | None, str | None]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            return None, (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return round(float(proc.stdout.split()[-1]), 1), None

    with tempfile.TemporaryDirectory() as out:
        argv = ["--device", "cpu", "--steps", str(steps), "--no-progress", "--out", out, *limits]
        mb, err = run(f"from minidann.bench.memory import _example_child; _example_child({argv!r})")
    rows = [{"impl": "minidann", "peak_rss_mb": mb, **({"error": err} if err else {}),
             "what": "the whole example: python examples/mnist_to_mnistm.py " + " ".join(argv[:4] + limits)}]
    torch_importable = sys.modules["torch"] is not None if "torch" in sys.modules else bool(
        importlib.util.find_spec("torch"))  # (without importing it here: only the child's memory counts)
    if not torch_importable:
        rows.append({"note": "torch is not importable, so PyTorch's run is skipped (pip install torch==2.13.0, "
                             "the CPU build, to compare)"})
        return rows
    mb_t, err = run(f"from minidann.bench.memory import _torch_example_floor_child; "
                    f"_torch_example_floor_child({steps}, {limit_train}, {limit_test})")
    rows.append({"impl": "torch", "peak_rss_mb": mb_t, **({"error": err} if err else {}),
                 "what": f"a lower bound of the same run in PyTorch: torch, the same data, {steps} source-only and "
                         f"{steps} DANN steps, one evaluation of both test sets per mode"})
    if mb and mb_t:
        rows.append({"ratio": round(mb / mb_t, 3), "what": "minidann's whole run / PyTorch's lower bound, peak "
                                                         "resident memory"})
    return rows


def peak_rss_mb(impl: str, device: str, batch: int, steps: int, threads: int = 1,
                kernels_name: str = "fast") -> float | None:
    """Peak resident memory (MB) of a fresh process running ``impl``'s step ``steps`` times; None if it failed."""
    import subprocess

    code = (f"from minidann.bench.memory import _rss_child; "
            f"_rss_child({impl!r}, {device!r}, {batch}, {steps}, {threads}, {kernels_name!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return round(float(proc.stdout.split()[-1]), 1) if proc.returncode == 0 else None


