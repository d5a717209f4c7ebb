"""Where the time of a DANN step goes: time per op and input shape (``--profile``), PyTorch's per aten op beside it."""

from __future__ import annotations

import time

from minidann.backend import synchronize

from .step import minidann_step
from .torch_twin import torch_step


def _shape(shape) -> str:
    """'32x3x28x28' for the shape (32, 3, 28, 28); '' for () or None."""
    return "x".join(map(str, shape or ()))


def profile_step(device: str, batch: int, steps: int, compare_torch: bool = False,
                 torch_tf32: bool = False, kernels_name: str = "fast") -> list[dict]:
    """Where the time of a DANN step goes: time spent in each Function's forward and backward, per input shape.

    Every ``forward``/``backward`` of every Function subclass is wrapped with a timer (on a GPU each call then
    waits for its kernels, so the profile shows kernel time per op but the step gets slower than unprofiled).
    Rows are per op *and* the shape of its first input (``"input"``), so the two convolutions get a row each.
    The rest of the step (the optimizer, the graph walk, Python) is reported as ``other``. ``kernels_name``: the
    layer of ops profiled ("fast" or "reference", one thread).

    With ``compare_torch`` (and torch importable) PyTorch's same step is profiled too, by ``torch.profiler``,
    in blocks of 10 steps alternating with minidann's, and its rows (``"impl": "torch"``, one per aten op and input
    shape, self time) follow: the same layers, op by op, in the same machine state.
    """
    from minidann.core import Function

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    totals: dict[tuple[str, str], float] = {}
    originals = []
    recording = [False]  # off during each block's untimed first step

    def timed(cls, name, fn):
        op = f"{cls.__name__}.{name}"

        def wrapper(self, *args):
            if not recording[0]:
                return fn(self, *args)
            if name == "forward":
                self._profile_input = _shape(getattr(args[0], "shape", None)) if args else ""  # and backward's
            t0 = time.perf_counter()
            out = fn(self, *args)
            synchronize()
            key = (op, getattr(self, "_profile_input", ""))
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    md_step, model = minidann_step(device, batch, kernels_name=kernels_name)
    t_step = torch_step(device, batch, model, tf32=torch_tf32) if compare_torch else None
    for _ in range(3):
        md_step()
        if t_step:
            t_step()
    torch_totals: dict[tuple[str, str], float] = {}
    torch_total = 0.0
    for cls in set(subclasses(Function)):
        for name in ("forward", "backward"):
            if name in vars(cls):
                originals.append((cls, name, vars(cls)[name]))
                setattr(cls, name, timed(cls, name, vars(cls)[name]))
    total = 0.0
    try:
        # blocks of 10 steps, each after a pause and one untimed step, as in step_benchmark (the other library's
        # spinning threads and its data in the caches would otherwise slow the first steps of a block)
        for start in range(0, steps, 10):
            n = min(10, steps - start)
            time.sleep(0.3)
            md_step()
            synchronize()
            recording[0] = True
            t0 = time.perf_counter()
            for _ in range(n):
                md_step()
            synchronize()
            total += time.perf_counter() - t0
            recording[0] = False
            if t_step:
                time.sleep(0.3)
                t_step()
                torch_total += _torch_profile_block(t_step, n, device, torch_totals)
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    rows = [{"impl": "minidann", "kernels": kernels_name, "op": op, "input": shape,
             "ms_per_step": round(v / steps * 1e3, 2),
             "share": round(v / total, 3)}
            for (op, shape), v in sorted(totals.items(), key=lambda kv: -kv[1])]
    other = total - sum(totals.values())
    rows.append({"impl": "minidann", "op": "other (SGD update, graph walk, Python)", "input": "",
                 "ms_per_step": round(other / steps * 1e3, 2), "share": round(other / total, 3)})
    if compare_torch and t_step is None:
        rows.append({"note": "torch is not importable (or has no CUDA): its profile is skipped."})
    if t_step:
        shown = {k: v for k, v in torch_totals.items() if v >= 0.005 * torch_total}  # ops of at least 0.5%
        rows += [{"impl": "torch", "op": op, "input": shape, "ms_per_step": round(v / steps * 1e3, 2),
                  "share": round(v / torch_total, 3)}
                 for (op, shape), v in sorted(shown.items(), key=lambda kv: -kv[1])]
        rest = torch_total - sum(shown.values())
        rows.append({"impl": "torch", "op": "other (smaller ops, autograd, Python)", "input": "",
                     "ms_per_step": round(rest / steps * 1e3, 2), "share": round(rest / torch_total, 3)})
    return rows


def _torch_profile_block(step, n: int, device: str, totals: dict) -> float:
    """Run ``step`` n times under torch.profiler; add each aten op's self time (s) to ``totals``; return wall s."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "gpu" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()  # synchronizes on a GPU
        wall = time.perf_counter() - t0
    for event in prof.key_averages(group_by_input_shape=True):
        if not event.key.startswith("aten::"):
            continue
        # on a GPU the op's kernel time, on the CPU its own time without the ops it called (microseconds)
        us = getattr(event, "self_device_time_total", 0) if device == "gpu" else event.self_cpu_time_total
        shapes = [s for s in (event.input_shapes or []) if s]
        shape = _shape(shapes[0]) if shapes else ""
        totals[(event.key, shape)] = totals.get((event.key, shape), 0.0) + us / 1e6
    return wall


