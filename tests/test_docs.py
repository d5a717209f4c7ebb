"""The docs cannot rot: their Python blocks run, their relative links resolve, and their code quotes match the code.

Conventions (see docs/README.md):
- A ```python block is run. All blocks of one Markdown file run in order, in one namespace (a later block may use
  names from an earlier one), in a temporary working directory. Blocks not meant to run use ```text or ```bash.
- A ```py block is a quote of library code: its lines must appear, in order and contiguously (a line ``...``
  skips any number of lines), in the .py file of the last relative link before the block.
- Every relative link ``[text](path)`` or image ``![alt](path)`` must point at an existing file; http(s) and
  mailto links and pure anchors are not checked here.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

#: Docs other engineers are still writing: docs/README.md links them already. A missing one only warns; once the
#: file exists its links are checked like any other. Remove an entry when its file lands.
PENDING: set[str] = set()  # docs linked from the index before they were written (none now)

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    before: str  # the Markdown text between the previous block and this one


def parse(text: str) -> tuple[list[Block], str]:
    """Split Markdown into fenced blocks and the prose outside them."""
    blocks, prose, chunk = [], [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            chunk.append(lines[i])
            prose.append(lines[i])
            i += 1
            continue
        indent, marker, lang = m.group(1), m.group(2), m.group(3).lower()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        blocks.append(Block(lang, "\n".join(body) + "\n", start, "\n".join(chunk)))
        chunk = []
    return blocks, "\n".join(prose)


def relative_links(prose: str) -> list[str]:
    """Link targets in Markdown prose, without inline code spans."""
    prose = INLINE_CODE.sub("", prose)
    return [t for t in LINK.findall(prose) + REF_DEF.findall(prose)]


def is_external(target: str) -> bool:
    return target.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def run_python_blocks(path: Path, blocks: list[Block]) -> list[tuple[int, float]]:
    """Run the file's ```python blocks in order in one namespace; return (line, seconds) per block."""
    namespace: dict = {"__name__": f"docs:{path.name}"}
    timings = []
    for b in blocks:
        if b.lang != "python":
            continue
        start = time.perf_counter()
        try:
            exec(compile(b.code, f"{rel(path)}:{b.line}", "exec"), namespace)  # noqa: S102 - running the docs
        except Exception as e:
            raise AssertionError(f"{rel(path)}: the ```python block at line {b.line} raised "
                                 f"{type(e).__name__}: {e}") from e
        timings.append((b.line, time.perf_counter() - start))
    return timings


def find_quote(quote: str, source: str) -> bool:
    """True when the quote's non-blank lines appear in ``source`` in order (stripped); ``...`` lines skip ahead."""
    src = [s.strip() for s in source.splitlines() if s.strip()]
    segments, current = [], []
    for line in quote.splitlines():
        s = line.strip()
        if s in ("...", "# ..."):
            segments.append(current)
            current = []
        elif s:
            current.append(s)
    segments.append(current)
    pos = 0
    for seg in (s for s in segments if s):
        for k in range(pos, len(src) - len(seg) + 1):
            if src[k:k + len(seg)] == seg:
                pos = k + len(seg)
                break
        else:
            return False
    return True


def quote_problems(path: Path, blocks: list[Block]) -> list[str]:
    problems, last_py = [], None
    for b in blocks:
        for target in relative_links(b.before):
            target = target.split("#")[0]
            if target.endswith(".py") and not is_external(target):
                last_py = (path.parent / target).resolve()
        if b.lang != "py":
            continue
        if last_py is None:
            problems.append(f"{rel(path)}:{b.line}: a ```py quote with no link to a .py file before it")
        elif not last_py.is_file():
            problems.append(f"{rel(path)}:{b.line}: quotes {last_py}, which does not exist")
        elif not find_quote(b.code, last_py.read_text()):
            problems.append(f"{rel(path)}:{b.line}: this ```py quote no longer matches {rel(last_py)}; update the "
                            f"doc to the current code:\n{b.code}")
    return problems


# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks, _ = parse(path.read_text())
    monkeypatch.chdir(tmp_path)
    timings = run_python_blocks(path, blocks)
    slow = [(line, s) for line, s in timings if s > 5.0]
    if slow:  # a soft limit: docs should stay quick to run, but a busy CI machine should not fail them
        warnings.warn(f"{rel(path)}: slow ```python blocks (line, seconds): {slow}", stacklevel=1)


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_relative_links_point_at_files(path):
    _, prose = parse(path.read_text())
    missing, pending = [], []
    for target in relative_links(prose):
        if is_external(target):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        if file.exists():
            continue
        name = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        (pending if name in PENDING else missing).append(target)
    assert not missing, f"{rel(path)} links to missing files: {missing}"
    if pending:
        warnings.warn(f"{rel(path)} links to docs not written yet: {pending}", stacklevel=1)


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_code_quotes_match_the_code(path):
    blocks, _ = parse(path.read_text())
    problems = quote_problems(path, blocks)
    assert not problems, "\n".join(problems)


def test_docs_index_lists_every_doc():
    _, prose = parse((ROOT / "docs" / "README.md").read_text())
    linked = {(ROOT / "docs" / t.split("#")[0]).resolve() for t in relative_links(prose) if not is_external(t)}
    unlisted = [rel(p) for p in DOCS if p.parent.name == "docs" and p.name != "README.md" and p not in linked]
    assert not unlisted, f"docs/README.md does not list {unlisted}"
    for name in PENDING:
        assert (ROOT / name).resolve() in linked, f"docs/README.md should link {name}"


# The checks above must be able to fail: feed them broken docs.


def test_a_failing_block_is_reported_with_its_line(tmp_path, monkeypatch):
    doc = "# t\n\n```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2, 'x is not 2'\n```\n"
    blocks, _ = parse(doc)
    assert [b.lang for b in blocks] == ["python", "python"] and blocks[1].line == 9
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match=r"line 9 raised AssertionError: x is not 2"):
        run_python_blocks(ROOT / "docs" / "fake.md", blocks)


def test_blocks_share_a_namespace_and_other_fences_do_not_run(tmp_path, monkeypatch):
    doc = ("```python\ny = 41\n```\n```text\nraise SystemExit\n```\n```bash\nexit 1\n```\n"
           "```python\ny += 1\nassert y == 42\n```\n")
    monkeypatch.chdir(tmp_path)
    assert len(run_python_blocks(ROOT / "docs" / "fake.md", parse(doc)[0])) == 2


def test_links_are_found_outside_code_only():
    doc = "see [a](../minidann/pad.py), ![b](img/x.png \"title\"), [c](https://x.org) and [d](#anchor)\n" \
          "`[not](a/link.md)`\n```text\n[nor](this.md)\n```\n[ref]: other.md\n"
    _, prose = parse(doc)
    links = relative_links(prose)
    assert links == ["../minidann/pad.py", "img/x.png", "https://x.org", "#anchor", "other.md"]
    assert [t for t in links if not is_external(t)] == ["../minidann/pad.py", "img/x.png", "other.md"]


def test_quotes_must_match_the_linked_file():
    source = "def f(x):\n    y = x + 1\n    z = y * 2\n    return z\n"
    assert find_quote("y = x + 1\nz = y * 2\n", source)
    assert find_quote("def f(x):\n...\n    return z\n", source)
    assert not find_quote("y = x + 2\n", source)
    assert not find_quote("z = y * 2\ny = x + 1\n", source)  # order matters
    doc = "[grl](../minidann/functions/grl.py):\n\n```py\nreturn gy * (+self.lambd)\n```\n"
    problems = quote_problems(ROOT / "docs" / "fake.md", parse(doc)[0])
    assert problems and "no longer matches minidann/functions/grl.py" in problems[0]
