"""Shared fixtures: the backends to run on (numpy always, cupy when a GPU is usable)."""

import pytest

from minidann.backend import gpu_available

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    # GPU tests skip cleanly, with the reason, where CuPy or a CUDA device is missing.
    if any("gpu" in item.keywords for item in items) and not gpu_available():
        from minidann.backend import gpu_unavailable_reason

        skip = pytest.mark.skip(reason="no usable GPU: " + (gpu_unavailable_reason() or ""))
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
