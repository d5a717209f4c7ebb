"""Stop a long loop at a clean point on Ctrl-C, SIGTERM (a scheduler, ``docker stop``, ``timeout``) or SIGHUP.

::

    with StopRequest() as stop:
        while step < num_steps:
            train_one_step()
            if stop.requested:          # the signal arrived during the step: finish it, save, leave
                save_checkpoint(...)
                raise SystemExit(stop.exit_status)   # 128 + the signal number: 130, 143, 129

The first signal only sets a flag (and says what will happen); a second one raises KeyboardInterrupt at once,
for a user who does not want to wait. The handlers are installed only in the main thread (Python delivers
signals there) and the previous ones are put back on leaving the block.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "StopRequest", "signal_exit_status"]

#: The signals that ask a run to stop: Ctrl-C, termination requests and a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def signal_exit_status(signum: int) -> int:
    """The exit status of a program that stopped because of signal `signum`, as shells report it: 128 + signum."""
    return 128 + int(signum)


def _say(message: str) -> None:
    try:  # after SIGHUP the terminal may be gone: the run must still save
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class StopRequest:
    """Context manager that turns the stop signals into a flag the loop checks between steps.

    Args:
        message: called with the signal's name ("SIGTERM") on the first signal; returns the line to print
            (default: "<name>: stopping after the current step (send it again to stop at once)").
        signals: the signals to catch (default :data:`STOP_SIGNALS`).

    Attributes:
        signum: the first signal received, or None.
    """

    def __init__(self, message: Callable[[str], str] | None = None, signals: tuple[int, ...] = STOP_SIGNALS):
        self.message, self.signals = message, signals
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int | None:
        return None if self.signum is None else signal_exit_status(self.signum)

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop as if `signum` had arrived (a testing aid, and for code that decides to stop)."""
        self._handle(signum, None)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now, without waiting for the step
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        _say(self.message(name) if self.message else f"\n{name}: stopping after the current step (send it again "
                                                     "to stop at once)")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()
