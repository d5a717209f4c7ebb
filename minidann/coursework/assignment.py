"""Write the student copy of the reference ops: the chosen backward bodies replaced by ``NotImplementedError``.

The folder it writes::

    DIR/ops/             the reference ops (minidann/functions), each chosen task's body replaced by a stub
    DIR/test_tasks.py    one test per task, marked task_<name>: ``pytest -m task_relu`` runs one
    DIR/pytest.ini       registers those markers (the tests run with --strict-markers)
    DIR/assignment.json  the tasks and their points, read by ``python -m minidann.coursework grade DIR``
    DIR/README.md        what to do, for the student

``ops`` imports the rest of minidann (``Function``, ``Tensor``, the backend) from the installed package: its
relative imports of the parent package (``from ..core import Function``) are rewritten as absolute ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .tasks import TASKS, Task, task_by_name

#: The reference ops that the student copy is made from.
SOURCE_DIR = Path(__file__).resolve().parents[1] / "functions"
MANIFEST = "assignment.json"
WRITTEN = ("ops", "test_tasks.py", "pytest.ini", MANIFEST, "README.md")

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<name>\w+)[ \t]*$")
_END = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION (?P<name>\w+)[ \t]*$")


def solution_blocks(source: str, filename: str = "<source>") -> dict[str, tuple[int, int]]:
    """The solution blocks of ``source``: name -> (line of BEGIN, line of END), 1-based.

    Raises:
        ValueError: a block opened inside another, an END without its BEGIN (or with another name), a BEGIN never
            closed, or a name used twice; the message names the file and the line.
    """
    blocks: dict[str, tuple[int, int]] = {}
    open_name, open_line = None, 0
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if open_name is not None:
                raise ValueError(f"{filename}:{lineno}: BEGIN SOLUTION {begin['name']} inside the block "
                                 f"{open_name} opened on line {open_line}: close it first with END SOLUTION")
            if begin["name"] in blocks:
                raise ValueError(f"{filename}:{lineno}: a second block named {begin['name']}: names are unique")
            open_name, open_line = begin["name"], lineno
        elif end:
            if end["name"] != open_name:
                raise ValueError(f"{filename}:{lineno}: END SOLUTION {end['name']} without a matching BEGIN "
                                 f"SOLUTION {end['name']} (open block: {open_name})")
            blocks[open_name] = (open_line, lineno)
            open_name = None
    if open_name is not None:
        raise ValueError(f"{filename}:{open_line}: BEGIN SOLUTION {open_name} is never closed by END SOLUTION")
    return blocks


def student_source(source: str, stubs: dict[str, str], filename: str = "<source>") -> str:
    """``source`` without marker lines, each block named in ``stubs`` replaced by ``raise NotImplementedError(msg)``.

    Args:
        source: a reference file's text.
        stubs: block name -> the message of its NotImplementedError; blocks not named keep their body.
    """
    solution_blocks(source, filename)  # raises on malformed markers
    out, stubbed = [], None
    for line in source.splitlines(keepends=True):
        begin, end = _BEGIN.match(line.rstrip("\r\n")), _END.match(line.rstrip("\r\n"))
        if begin:
            if begin["name"] in stubs:
                stubbed = begin["name"]
                out.append(f"{begin['indent']}raise NotImplementedError({stubs[stubbed]!r})\n")
            continue
        if end:
            stubbed = None
            continue
        if stubbed is None:
            out.append(line)
    text = "".join(out)
    # the copy lives outside the package: "from ..core import Function" becomes "from minidann.core import Function"
    text = re.sub(r"^([ \t]*)from \.\.(\w)", r"\1from minidann.\2", text, flags=re.M)
    return re.sub(r"^([ \t]*)from \.\. import ", r"\1from minidann import ", text, flags=re.M)


def check_markers(tasks: Sequence[Task] = TASKS, source_dir: Path = SOURCE_DIR) -> None:
    """Every task's block exists in its file, and the files' markers are well formed (ValueError if not)."""
    for task in tasks:
        path = source_dir / task.file
        if task.name not in solution_blocks(path.read_text(), str(path)):
            raise ValueError(f"task {task.name}: no '# BEGIN SOLUTION {task.name}' block in {path}: put the two "
                             f"marker lines around the body of {task.what}")


def _test_file(tasks: Sequence[Task]) -> str:
    tests = "\n".join(f'''

@pytest.mark.{t.marker}
def test_{t.name}(ops):
    """{t.what} in ops/{t.file} ({t.points} points)."""
    print(run_task(task_by_name("{t.name}"), ops))''' for t in tasks)
    return f'''"""The checks of your ops, one test per task: ``pytest`` runs them all, ``pytest -m task_relu`` one task.

Each test runs the float64 gradient check (random upstream gradient) and compares with the reference ops.
"""

from pathlib import Path

import pytest

from minidann.coursework.grading import load_ops, unload_ops
from minidann.coursework.tasks import run_task, task_by_name


@pytest.fixture(scope="module")
def ops():
    module = load_ops(Path(__file__).resolve().parent)
    yield module
    unload_ops(module)
{tests}
'''


def _readme(tasks: Sequence[Task]) -> str:
    rows = "\n".join(f"| `{t.name}` | `{t.what}` in `ops/{t.file}` | {t.points} |" for t in tasks)
    return f"""# Backward passes of minidann's ops

Each task below is one backward pass that raises `NotImplementedError` in `ops/`. Write it (the docstrings give
the shapes), then check your work:

    pytest -m task_relu          # one task
    pytest                       # every task
    python -m minidann.coursework grade .   # the score table

| task | what to write | points |
|---|---|---|
{rows}

A task passes when its gradients agree with central finite differences (float64, random upstream gradient) and
with the reference ops (float32 and float64).
"""


def make_assignment(folder: str | os.PathLike, tasks: Sequence[str] | None = None, *, solutions: bool = False,
                    overwrite: bool = False) -> Path:
    """Write the student copy into ``folder``; return its path.

    Args:
        folder: where to write; created if missing. A folder that holds anything is refused unless ``overwrite``.
        tasks: task names (default: every task of :data:`~minidann.coursework.tasks.TASKS`).
        solutions: write the reference bodies instead of stubs (the teacher's key; it grades to full marks).
        overwrite: replace the files listed in :data:`WRITTEN` (``ops/`` whole, with any work in it).
    Raises:
        FileExistsError: ``folder`` is not empty and ``overwrite`` is False.
        ValueError: an unknown task name, or malformed markers in the reference source.
    """
    chosen = [task_by_name(n) for n in (tasks if tasks is not None else [t.name for t in TASKS])]
    if not chosen:
        raise ValueError("make_assignment: choose at least one task")
    check_markers(chosen)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder: give a folder for the assignment")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} is not empty: choose a new folder, or pass --overwrite to replace "
                              f"{', '.join(WRITTEN)} in it (a student's work in ops/ would be lost)")
    stubs = {} if solutions else {t.name: t.todo() for t in chosen}
    shutil.rmtree(folder / "ops", ignore_errors=True)
    (folder / "ops").mkdir(parents=True)
    for path in sorted(SOURCE_DIR.glob("*.py")):
        (folder / "ops" / path.name).write_text(student_source(path.read_text(), stubs, str(path)))
    (folder / "test_tasks.py").write_text(_test_file(chosen))
    markers = "".join(f"    {t.marker}: {t.what} in ops/{t.file}\n" for t in chosen)
    (folder / "pytest.ini").write_text(f"[pytest]\naddopts = --strict-markers -p no:cacheprovider\n"
                                       f"markers =\n{markers}")
    manifest = {"tasks": [t.name for t in chosen], "points": {t.name: t.points for t in chosen},
                "solutions": solutions}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / "README.md").write_text(_readme(chosen))
    return folder
