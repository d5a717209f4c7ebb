"""Shared fixtures: the backends to run on (numpy always, cupy when a GPU is usable)."""

import os

import pytest

from minidann.backend import gpu_available

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    # GPU tests skip cleanly, with the reason, where CuPy or a CUDA device is missing; unless MINIDANN_REQUIRE_GPU=1
    # (set by .ci/gpu-check on a machine lent for them), where a GPU that cannot be used is an error, not a skip.
    if any("gpu" in item.keywords for item in items) and not gpu_available():
        from minidann.backend import gpu_unavailable_reason

        reason = "no usable GPU: " + (gpu_unavailable_reason() or "")
        if os.environ.get("MINIDANN_REQUIRE_GPU") == "1":
            raise pytest.UsageError(reason + " (MINIDANN_REQUIRE_GPU=1: the GPU tests must run, not skip)")
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
