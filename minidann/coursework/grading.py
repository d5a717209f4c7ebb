"""Grade a student copy: import its ``ops`` in isolation, check every task, print the score table.

The copy is imported under a package name of its own (``_minidann_student_<random>``), never as ``minidann`` or
``minidann.functions``: the installed reference ops stay what they are, and the checks compare against them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .assignment import MANIFEST
from .tasks import Task, run_task, task_by_name


@dataclass(frozen=True)
class Result:
    """One row of the score table."""

    task: str
    points: int
    passed: bool
    message: str

    @property
    def score(self) -> int:
        return self.points if self.passed else 0


def load_ops(folder: str | Path) -> ModuleType:
    """Import ``folder/ops`` as a package with a unique name and return it (see :func:`unload_ops`).

    Raises:
        FileNotFoundError: no ``ops/__init__.py`` in ``folder``.
        Whatever importing the student's files raises (a SyntaxError names the file and the line).
    """
    init = Path(folder) / "ops" / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(f"{init} is missing: is {folder} a folder made by python -m minidann.coursework "
                                f"make-assignment?")
    name = f"_minidann_student_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the copy's relative imports (from .conv import ...) look their package up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        unload_ops(module)
        raise
    return module


def unload_ops(module: ModuleType) -> None:
    """Remove a package loaded by :func:`load_ops`, and its submodules, from ``sys.modules``."""
    name = module.__name__
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def read_manifest(folder: str | Path) -> list[Task]:
    """The tasks listed in ``folder/assignment.json``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not an assignment folder; make one with "
                                f"python -m minidann.coursework make-assignment {folder}")
    return [task_by_name(n) for n in json.loads(path.read_text())["tasks"]]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def grade(folder: str | Path, seed: int = 0) -> list[Result]:
    """Check every task of the assignment in ``folder``: one :class:`Result` per task."""
    tasks = read_manifest(folder)
    try:
        ops = load_ops(folder)
    except Exception as e:  # every task fails, each row saying why
        where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
        return [Result(t.name, t.points, False, f"ops does not import: {type(e).__name__}: {_first_line(e)}{where}")
                for t in tasks]
    results = []
    try:
        for task in tasks:
            try:
                results.append(Result(task.name, task.points, True, run_task(task, ops, seed)))
            except NotImplementedError as e:
                results.append(Result(task.name, task.points, False, f"not implemented: {_first_line(e)}"))
            except AssertionError as e:
                results.append(Result(task.name, task.points, False, _first_line(e)))
            except Exception as e:  # a crash in the student's code is that task's failure, not the grader's
                results.append(Result(task.name, task.points, False, f"{type(e).__name__}: {_first_line(e)}"))
    finally:
        unload_ops(ops)
    return results


def score_table(results: list[Result]) -> str:
    """The score table as text: task, points, passed or failed, the checker's message; then the total."""
    rows = [("task", "points", "result", "message")]
    rows += [(r.task, f"{r.score}/{r.points}", "passed" if r.passed else "FAILED", r.message) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  -------")
    total, full = sum(r.score for r in results), sum(r.points for r in results)
    lines.append(f"score: {total} / {full} ({sum(r.passed for r in results)} of {len(results)} tasks passed)")
    return "\n".join(lines)
