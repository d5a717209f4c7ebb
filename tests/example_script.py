"""The example script, loaded as a module for the tests of examples/mnist_to_mnistm.py (one copy per test file)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist_to_mnistm.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_example(name: str):
    """examples/mnist_to_mnistm.py as a fresh module called ``name`` (its globals are the test file's own)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
