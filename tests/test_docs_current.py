"""The docs say what is true now: no work-log references ("item 21", "issue 6", "#12") in README.md, docs/*.md or
examples/*.py. The history of a change is in git; a reader of the docs wants the current state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*.py"))]

#: "item 21", "items 16 and 17", "issue 6", "Issue 19", and a bare "#12". A citation of another project's issue
#: ("numpy/numpy#11821", a link to github.com/.../issues/11821) names where to read more, and stays allowed.
WORK_LOG = re.compile(r"\b(?:items?|issues?)\s+\d+|(?<![\w/&])#\d+\b", re.IGNORECASE)


def work_log_references(text: str) -> list[tuple[int, str]]:
    """(line number, the match) for every work-log reference in ``text``."""
    return [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1) for m in WORK_LOG.finditer(line)]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_no_item_or_issue_numbers(path):
    found = work_log_references(path.read_text())
    assert not found, (f"{rel(path)} refers to the work log (line, text): {found}; say what is true now, without "
                       "item or issue numbers (the history is in git)")


def test_the_check_finds_work_log_references_and_spares_citations():
    planted = ("Before item 21 the step took 30 ms.\nSince Items 16 and 17 it is faster.\n(issue 6's speed work)\n"
               "fixed in #12, see also Issue 5.\n")
    assert [n for n, _ in work_log_references(planted)] == [1, 2, 3, 4, 4]
    allowed = ("matmul holds the GIL (numpy/numpy#11821, https://github.com/numpy/numpy/issues/11821).\n"
               "See [the table](gradcheck.md#the-table); 24 items in 3 issues of a journal; &#39; is a quote.\n")
    assert work_log_references(allowed) == []


def test_every_doc_and_example_is_scanned():
    names = {rel(p) for p in FILES}
    assert {"README.md", "docs/gradcheck.md", "docs/performance.md", "examples/two_moons.py"} <= names
