"""Benchmarks: time ops and the whole DANN training step (never a test: the machine is shared and noisy).

    python -m minidann.bench [--device cpu|gpu] [--kernels fast|reference|both] [--compare-torch] [--threads ...]
    python -m minidann.bench --ab-pairs 5 [--steps N]      (each library alone in its own process, in A/B pairs)
    python -m minidann.bench --example-memory [--steps N]  (peak memory of the example's whole run)

One module per concept:

- :mod:`~minidann.bench.step`: the DANN step of each implementation, timed interleaved in one process.
- :mod:`~minidann.bench.pairs`: the same step with batch sampling, each library alone in a fresh process, in pairs.
- :mod:`~minidann.bench.torch_twin`: PyTorch's version of the network and the step, from minidann's weights.
- :mod:`~minidann.bench.ops`: forward + backward of single ops at the DANN shapes.
- :mod:`~minidann.bench.profile`: the time per op and input shape inside a step.
- :mod:`~minidann.bench.memory`: peak resident memory of a step's process and of the example's whole run.
- :mod:`~minidann.bench.machine`: the processor, and what handing memory between its cores costs.
- ``__main__``: the command line; ``python -m minidann.bench --help`` lists every flag.
"""

from .machine import core_handoff_probe, cpu_summary
from .memory import example_memory, peak_rss_mb
from .ops import op_benchmarks
from .pairs import ab_pairs
from .profile import profile_step
from .step import block_ratio_spread, minidann_step, step_benchmark
from .torch_twin import cupy_float32, set_torch_cuda_float32, torch_step

__all__ = ["ab_pairs", "block_ratio_spread", "core_handoff_probe", "cpu_summary", "cupy_float32", "example_memory",
           "main", "minidann_step", "op_benchmarks", "peak_rss_mb", "profile_step", "set_torch_cuda_float32",
           "step_benchmark", "torch_step"]


def main(argv=None) -> int:
    """``python -m minidann.bench`` with ``argv`` (None: the command line); returns the exit status."""
    from .__main__ import main as cli  # (not imported with the package: ``python -m`` runs __main__ itself)

    return cli(argv)
