"""The notebooks of examples/notebooks run top to bottom in a real Jupyter kernel, and are committed as generated.

Each cell has a timeout; a cell that raises fails the test. The kernel inherits this process's environment (so
PYTHONPATH picks the same minidann). Run times are printed (pytest -s) and warned about above the 3-minute budget.
"""

import importlib.util
import time
import warnings
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

HERE = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
NAMES = ["grl_line_by_line.ipynb", "conv_backprop.ipynb", "two_moons.ipynb", "mnist_to_mnistm.ipynb"]
BUDGET_S = 180.0  # on a 2-core CPU


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", HERE / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_notebooks_are_the_generated_ones_without_outputs():
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == sorted(NAMES)
    for name in NAMES:
        text = (HERE / name).read_text()
        assert text == gen.render(name), f"{name} differs from its cells: run python {HERE / 'make_notebooks.py'}"
        nb = nbformat.reads(text, as_version=4)
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), f"{name} has outputs: strip them"
        assert "find_spec(\"minidann\")" in nb.cells[1].source  # the install cell comes first after the title


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs(name):
    nb = nbformat.read(HERE / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(HERE)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell when one raises
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s")
    if seconds > BUDGET_S:
        warnings.warn(f"{name} took {seconds:.0f} s, over its {BUDGET_S:.0f} s budget", stacklevel=1)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
