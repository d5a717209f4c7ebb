"""SIGTERM and SIGHUP stop a loop like Ctrl-C: after the current step, with 128 + the signal number."""

import signal
import subprocess
import sys
import textwrap

import pytest

from minidann.stop_signals import STOP_SIGNALS, StopRequest, signal_exit_status

LOOP = textwrap.dedent("""
    import sys, time
    from minidann.stop_signals import StopRequest
    with StopRequest() as stop:
        print("ready", flush=True)
        for step in range(1, 10_000):
            time.sleep(0.05)  # one step: a signal that arrives now waits for its end
            if stop.requested:
                print(f"saved at step {step}", flush=True)
                raise SystemExit(stop.exit_status)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_finishes_the_step_and_exits_with_128_plus_its_number(sig):
    p = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + sig == signal_exit_status(sig)
    assert out.startswith("saved at step ") and f"{signal.Signals(sig).name}: stopping after the current step" in err


def test_a_second_signal_stops_at_once_and_the_old_handlers_come_back():
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with pytest.raises(KeyboardInterrupt), StopRequest(message=lambda name: "") as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM" and stop.exit_status == 143
        signal.raise_signal(signal.SIGHUP)
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
