"""Print the gradient-check table: every op and layer, on each layer of ops; exit status 1 if any check fails."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import dispatch
from ..backend import GPUUnavailableError, resolve_device
from . import cases

HEADER = ("op", "shapes", "kernels", "route (y / gx / gW)", "max rel error", "result")


def table_rows(device: str, seed: int, kernels: str) -> list[tuple[str, ...]]:
    """One row per case, and the GRL and DANN checks, run on ``kernels`` ("fast" or "reference")."""
    rows = []

    def row(op, shapes, run, route="-"):
        try:
            value = run()
            err = f"{value:.2e}" if isinstance(value, float) else "-"
            rows.append((op, shapes, kernels, route, err, "pass"))
        except AssertionError as e:
            rows.append((op, shapes, kernels, route, "-", "FAIL: " + str(e).split(":")[0]))

    with dispatch.kernels(kernels):
        for case in cases.ALL_CASES:
            row(case.name, case.shapes, lambda case=case: cases.run_case(case, device, seed),
                cases.route(case, kernels, device))
        row("grad_reverse", "(3,4), lambd 0.7: grad == -lambd * gy exactly", lambda: cases.grl_exact(0.7, device))
        row("grad_reverse", "(3,4), lambd 0.5: a plain check must fail, by design",
            lambda: cases.grl_plain_check_fails(0.5, device) and None)
        row("DANN update", "G_f vs L_y - lambd L_d, G_y vs L_y, G_d vs L_d (lambd 0.6)",
            lambda: cases.dann_saddle_check(0.6, device, seed))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table for the chosen layers of ops; return 1 if any check fails, 2 if the device is missing."""
    parser = argparse.ArgumentParser(
        prog="python -m minidann.gradcheck",
        description="Check every op and layer's backward pass against central finite differences (float64, "
                    "random upstream gradient) and print one row per check.")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and upstream gradients (default: 0)")
    parser.add_argument("--kernels", choices=[*dispatch.KERNELS, "both"], default="both",
                        help="the layer of ops to check: fast, reference or both, one after the other (default: both)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        device, _ = resolve_device(args.device)
    except GPUUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    layers = dispatch.KERNELS if args.kernels == "both" else (args.kernels,)
    rows = [r for name in layers for r in table_rows(device, args.seed, name)]
    widths = [max(len(r[i]) for r in [*rows, HEADER]) for i in range(len(HEADER))]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    print(f"minidann gradient checks on {device} (float64, central differences, random upstream gradient; "
          f"kernels: {', '.join(layers)})")
    print(line(HEADER))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    failed = sum(r[5] != "pass" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
