"""Shared fixtures: the backends to run on, and what backs the ``gpu`` tests.

The ``gpu`` tests run on real CuPy where a CUDA device is usable, and on the strict CuPy stand-in
(tests/cupy_standin.py, NumPy underneath) everywhere else, so CI runs every one of them. With
MINIDANN_REQUIRE_GPU=1 (set by .ci/gpu-check on a machine lent for them) a GPU that cannot be used is an error,
not a fall-back to the stand-in.
"""

import os

import cupy_standin
import pytest

from minidann.backend import gpu_available, gpu_unavailable_reason

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]

#: True where the ``gpu`` tests run on real CuPy; False where they run on the stand-in.
REAL_GPU = gpu_available()


def pytest_report_header(config):
    if REAL_GPU:
        return "gpu tests: on CuPy and a CUDA device"
    return "gpu tests: on the CuPy stand-in (tests/cupy_standin.py), because " + (gpu_unavailable_reason() or "")


def pytest_collection_modifyitems(config, items):
    if REAL_GPU or os.environ.get("MINIDANN_REQUIRE_GPU") != "1":
        return
    if any("gpu" in item.keywords for item in items):
        raise pytest.UsageError("no usable GPU: " + (gpu_unavailable_reason() or "") +
                                " (MINIDANN_REQUIRE_GPU=1: the GPU tests must run on a GPU, not on the stand-in)")


@pytest.fixture(autouse=True)
def _gpu_backend(request, monkeypatch):
    """A ``gpu`` test without a real GPU gets the CuPy stand-in, for that test only."""
    if not REAL_GPU and request.node.get_closest_marker("gpu") is not None:
        cupy_standin.install(monkeypatch)
    yield


@pytest.fixture
def standin(monkeypatch):
    """The CuPy stand-in installed for this test, on any machine (for counting launches and syncs); its counters."""
    return cupy_standin.install(monkeypatch)
