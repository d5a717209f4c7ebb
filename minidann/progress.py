"""Where a training run's progress shows: a tqdm bar on a terminal or in a notebook, plain lines elsewhere.

A bar redraws one line in place, which a terminal and a Jupyter notebook (``tqdm.auto`` picks the notebook widget,
which needs ``ipywidgets``) show well and a log file, CI or ``nohup`` do not: there tqdm stays silent, and so it does
in a notebook without ``ipywidgets``. :class:`PlainLines` fills that gap with
one line per evaluation, for example::

    dann step 1000/8600 (11.6%) label_loss 0.2650 domain_loss 0.6611 domain_acc 0.603 source_acc 0.9760 \
target_acc 0.6845 elapsed 0:01:53 eta 0:14:19
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import TextIO

STYLES = ("bar", "lines", None)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the test ``tqdm.auto`` makes to choose its notebook bar)."""
    ipython = sys.modules.get("IPython")  # never imported here: a script without IPython is not in a notebook
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def has_widgets() -> bool:
    """True when ``ipywidgets``, which the notebook bar draws with, is installed."""
    return importlib.util.find_spec("ipywidgets") is not None


def progress_style(enabled: bool, stream: TextIO | None = None) -> str | None:
    """How to show progress on ``stream`` (default sys.stderr): "bar" on a terminal or in a notebook with
    ``ipywidgets``, "lines" elsewhere (a file, a pipe, a notebook without widgets), None when ``enabled`` is False."""
    if not enabled:
        return None
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        tty = False
    return "bar" if tty or (in_notebook() and has_widgets()) else "lines"


def _clock(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainLines:
    """One line per metrics row that carries an evaluation: the step, the window's mean losses, the
    accuracies, the time since the run (or the resumed session) began and the estimated time left.

    The estimate assumes the remaining steps take as long per step as the ones since ``start`` (evaluations
    included), so it is rough after the first interval and settles as the run goes.

    Args:
        mode: the training mode, printed first on each line.
        num_steps: total steps of the mode.
        start_step: the step the session starts from (after a resume, the checkpoint's).
        stream: where the lines go (default sys.stderr, looked up at each line).
        clock: seconds, monotonic (a testing aid).
    """

    def __init__(self, mode: str, num_steps: int, start_step: int = 0, stream: TextIO | None = None,
                 clock=time.perf_counter):
        self.mode, self.num_steps, self.start_step = mode, num_steps, start_step
        self.stream, self.clock = stream, clock
        self.t0 = clock()

    def format(self, row: dict) -> str:
        """The line for a metrics row (keys as :data:`minidann.train.METRIC_COLUMNS`)."""
        step = row["step"]
        elapsed = self.clock() - self.t0
        done = step - self.start_step
        eta = elapsed / done * (self.num_steps - step) if done > 0 else float("nan")
        parts = [f"{self.mode} step {step}/{self.num_steps} ({100 * step / self.num_steps:.1f}%)"]
        for key, digits in (("label_loss", 4), ("domain_loss", 4), ("domain_acc", 3), ("source_acc", 4),
                            ("target_acc", 4)):
            if row.get(key) is not None:
                parts.append(f"{key} {row[key]:.{digits}f}")
        parts.append(f"elapsed {_clock(elapsed)}")
        parts.append(f"eta {_clock(eta) if eta == eta else '?'}")
        return " ".join(parts)

    def __call__(self, row: dict) -> None:
        """Print the line of ``row`` when it carries an evaluation (accuracies), else nothing."""
        if row.get("source_acc") is None and row.get("target_acc") is None:
            return
        print(self.format(row), file=sys.stderr if self.stream is None else self.stream, flush=True)
