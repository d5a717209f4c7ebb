"""The control flow of .ci/gpu-check, on the CPU: stand-in ``python3`` and ``nvidia-smi`` on PATH.

A part that fails must turn the exit status non-zero and be named; the other parts still run; a preflight that
finds no usable GPU stops the run; the parts' time limits add up to less than 540 s.
"""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu-check"

FAKE_PYTHON3 = """#!/bin/sh
echo "python3 $*" >> "$CALLS"
if [ -n "$FAIL_MATCH" ] && echo "$*" | grep -q -- "$FAIL_MATCH"; then
  echo "fake python3: failing on purpose"
  exit "${FAIL_RC:-1}"
fi
echo "fake python3: ok"
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
echo "nvidia-smi $*" >> "$CALLS"
[ -n "$NVSMI_FAIL" ] && { echo "NVIDIA-SMI has failed"; exit 9; }
echo "Fake GPU, 81559 MiB, 570.00"
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_check(tmp_path, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _exe(bin_dir / "python3", FAKE_PYTHON3)
    _exe(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    calls, out = tmp_path / "calls.txt", tmp_path / "out"
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls),
                "OUT": str(out), **env}
    proc = subprocess.run(["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=120)
    return proc, (calls.read_text().splitlines() if calls.exists() else []), out


def test_a_passing_run_exits_0_runs_every_part_and_keeps_its_logs(tmp_path):
    proc, calls, out = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-check: all parts passed" in proc.stdout
    joined = "\n".join(calls)
    assert "python3 .ci/gpu-preflight.py" in joined
    assert f"-m pytest -q -m gpu -p no:cacheprovider --junitxml={out}/gpu-tests.xml" in joined
    assert "-m minidann.gradcheck --device gpu" in joined
    assert "examples/mnist_to_mnistm.py --device gpu --steps 2000" in joined
    assert "--batch-size 64" in joined and "--batch-size 512" in joined
    assert "--launches" in joined and "--batch-size 512 --steps 30 --no-memory --torch-tf32" in joined
    for part in ("preflight", "tests", "gradcheck", "example", "bench64", "bench512"):
        assert (out / f"{part}.log").is_file(), part
        assert re.search(rf"^{part} +ok ", proc.stdout, re.M), part


@pytest.mark.parametrize("match,part", [("-m pytest", "tests"), ("minidann.gradcheck", "gradcheck"),
                                        ("mnist_to_mnistm", "example"), ("--batch-size 512", "bench512"),
                                        ("--torch-tf32", "bench512")])
def test_a_failing_part_makes_the_run_fail_and_is_named(tmp_path, match, part):
    proc, calls, _ = run_check(tmp_path, FAIL_MATCH=match)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"gpu-check: FAILED: {part}" in proc.stdout
    assert re.search(rf"^{part} +FAILED \(exit 1\)", proc.stdout, re.M)
    assert any("--batch-size 512" in c for c in calls)  # the parts after it still ran


def test_no_driver_stops_the_run_after_the_preflight(tmp_path):
    proc, calls, _ = run_check(tmp_path, NVSMI_FAIL="1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no NVIDIA driver" in proc.stdout and "gpu-check: FAILED: preflight" in proc.stdout
    assert not any("pytest" in c for c in calls)


def test_a_gpu_that_cannot_compute_stops_the_run(tmp_path):
    proc, calls, _ = run_check(tmp_path, FAIL_MATCH="gpu-preflight.py", FAIL_RC="2")
    assert proc.returncode == 2 and "stopped after the preflight" in proc.stdout
    assert not any("pytest" in c for c in calls)


def test_a_missing_library_is_reported_and_fails_the_run_at_the_end(tmp_path):
    proc, calls, _ = run_check(tmp_path, FAIL_MATCH="gpu-preflight.py", FAIL_RC="1")
    assert proc.returncode == 1 and "gpu-check: FAILED: preflight" in proc.stdout
    assert any("--batch-size 512" in c for c in calls)


def test_a_part_that_hangs_is_stopped_at_its_limit(tmp_path):
    # a python3 that sleeps past the gradcheck limit, quickly: the limits are read from the script, so shrink one
    script = SCRIPT.read_text().replace("LIMIT_GRADCHECK=40", "LIMIT_GRADCHECK=1")
    patched = tmp_path / "gpu-check"
    patched.write_text(script.replace('cd "$(dirname "$0")/.."', f'cd "{ROOT}"'))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "python3", FAKE_PYTHON3.replace('echo "fake python3: ok"',
                                                   'case "$*" in *gradcheck*) sleep 30;; esac'))
    _exe(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(tmp_path / "c"),
           "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(patched)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "gpu-check: FAILED: gradcheck" in proc.stdout
    assert "timed out after 1 s" in proc.stdout


def test_the_time_limits_add_up_to_less_than_540_s():
    limits = [int(v) for v in re.findall(r"^LIMIT_\w+=(\d+)$", SCRIPT.read_text(), re.M)]
    assert len(limits) == 6 and sum(limits) < 540
    uses = re.findall(r'run_part \w+ "\$(LIMIT_\w+)"', SCRIPT.read_text())
    assert len(uses) == len(set(uses)) == 6  # each part under its own limit
