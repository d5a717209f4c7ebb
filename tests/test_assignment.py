"""The autograded assignment: the key grades to full marks, the stripped copy to 0, a planted bug loses its task."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import minidann
from minidann.coursework import TASKS, grade, make_assignment, score_table, solution_blocks, student_source
from minidann.coursework.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

# One planted bug per task: (file in ops/, the reference line, the buggy line, what the grader must say).
BUGS = {
    "linear": ("basic.py", "gb = gy.sum(axis=0) if", "gb = gy.mean(axis=0) if", "gradient check failed for input 2"),
    "relu": ("activation.py", "return gy * (self.y > 0)", "return gy * (self.y >= 0)", "gradient check failed"),
    "sigmoid": ("activation.py", "return gy * self.y * (1 - self.y)", "return gy * self.y", "gradient check failed"),
    "softmax_cross_entropy": ("loss.py", "gz *= gy / N", "gz *= gy", "gradient check failed"),
    # forgets the reversal: right at lambd = -1 (the gradient check), wrong at 0.7 (the comparison catches it)
    "grad_reverse": ("grl.py", "return gy * (-self.lambd)", "return gy", "the reference gives"),
    "conv2d": ("conv.py", "gb = gY.sum(axis=0)", "gb = gY.mean(axis=0)", "gradient check failed"),
    "max_pool2d": ("pool.py", "* gy[..., None]", "* 2 * gy[..., None]", "gradient check failed"),
}


def _task_params():
    return [pytest.param(t.name, marks=getattr(pytest.mark, t.marker)) for t in TASKS]


def _run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_assignment(tmp_path_factory.mktemp("key") / "a", solutions=True)


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    return make_assignment(tmp_path_factory.mktemp("stripped") / "a")


def test_every_task_has_its_markers_a_planted_bug_and_a_registered_pytest_marker():
    ops_dir = ROOT / "minidann" / "functions"
    for t in TASKS:
        assert t.name in solution_blocks((ops_dir / t.file).read_text()), t.name
        assert t.name in BUGS, f"plant a bug for task {t.name} in BUGS"
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the markers are one per line)
    missing = {t.marker for t in TASKS if f'"{t.marker}: ' not in pyproject}
    assert not missing, f"add {sorted(missing)} to [tool.pytest.ini_options] markers in pyproject.toml"


def test_the_key_grades_to_full_marks(key, capsys):
    results = grade(key)
    assert [r.task for r in results] == [t.name for t in TASKS]
    assert all(r.passed for r in results), score_table(results)
    full = sum(t.points for t in TASKS)
    assert main(["grade", str(key)]) == 0
    assert f"score: {full} / {full}" in capsys.readouterr().out


def test_the_stripped_copy_scores_zero_with_a_message_per_task(stripped, capsys):
    results = grade(stripped)
    for r, t in zip(results, TASKS, strict=True):
        assert not r.passed
        assert r.message.startswith(f"not implemented: task {t.name}: write {t.what} in ops/{t.file}"), r.message
    assert main(["grade", str(stripped)]) == 1
    out = capsys.readouterr().out
    assert f"score: 0 / {sum(t.points for t in TASKS)}" in out and out.count("FAILED") == len(TASKS)
    # only the bodies are gone: forward passes and the other ops are the reference's
    text = (stripped / "ops" / "activation.py").read_text()
    assert "SOLUTION" not in text and "xp.maximum(x, 0)" in text and "self.y > 0" not in text


@pytest.mark.parametrize("name", _task_params())
def test_a_planted_bug_loses_exactly_its_task(tmp_path, name):
    folder = make_assignment(tmp_path / "a", solutions=True)
    file, good, bad, says = BUGS[name]
    path = folder / "ops" / file
    text = path.read_text()
    assert text.count(good) == 1
    path.write_text(text.replace(good, bad))
    results = {r.task: r for r in grade(folder)}
    failed = [t for t, r in results.items() if not r.passed]
    assert failed == [name], score_table(list(results.values()))
    assert says in results[name].message, results[name].message


def test_a_copy_that_does_not_import_fails_every_task(tmp_path):
    folder = make_assignment(tmp_path / "a", ["relu", "sigmoid"], solutions=True)
    with open(folder / "ops" / "activation.py", "a") as f:
        f.write("def broken(:\n")
    results = grade(folder)
    assert [r.passed for r in results] == [False, False]
    assert all("ops does not import: SyntaxError" in r.message and "activation.py" in r.message for r in results)


def test_grading_leaves_the_installed_ops_alone(stripped):
    relu, functions = minidann.functions.relu, sys.modules["minidann.functions"]
    grade(stripped)
    assert minidann.functions.relu is relu and sys.modules["minidann.functions"] is functions
    assert not [k for k in sys.modules if k.startswith("_minidann_student_")]
    assert minidann.functions.activation.ReLU.backward.__code__.co_filename.startswith(str(ROOT / "minidann"))


def test_a_subset_of_tasks(tmp_path):
    folder = make_assignment(tmp_path / "a", ["sigmoid"])
    assert [r.task for r in grade(folder)] == ["sigmoid"]
    text = (folder / "ops" / "activation.py").read_text()
    assert "gy * (self.y > 0)" in text and "task sigmoid" in text  # relu keeps its body
    with pytest.raises(ValueError, match="no task named 'conv'; the tasks are linear"):
        make_assignment(tmp_path / "b", ["conv"])


def test_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["make-assignment", str(folder)]) == 2
    assert "is not empty: choose a new folder, or pass --overwrite" in capsys.readouterr().err
    assert not (folder / "ops").exists()
    assert main(["make-assignment", str(folder), "--overwrite", "--tasks", "relu"]) == 0
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "ops" / "activation.py").is_file()
    assert main(["grade", str(tmp_path)]) == 2  # not an assignment folder
    assert "not an assignment folder" in capsys.readouterr().err


@pytest.mark.parametrize("source, problem", [
    ("# BEGIN SOLUTION a\n# BEGIN SOLUTION b\n", "inside the block a"),
    ("# END SOLUTION a\n", "without a matching BEGIN"),
    ("# BEGIN SOLUTION a\nx = 1\n", "never closed"),
    ("# BEGIN SOLUTION a\n# END SOLUTION a\n# BEGIN SOLUTION a\n# END SOLUTION a\n", "a second block named a"),
])
def test_malformed_markers_are_refused(source, problem):
    with pytest.raises(ValueError, match=problem):
        student_source(source, {})


def test_the_shipped_tests_select_one_task_by_marker(stripped, key):
    one = _run("-m", "pytest", "-q", "-m", "task_relu", cwd=stripped)
    assert one.returncode == 1 and f"1 failed, {len(TASKS) - 1} deselected" in one.stdout, one.stdout + one.stderr
    assert "NotImplementedError: task relu" in one.stdout
    every = _run("-m", "pytest", "-q", cwd=key)
    assert every.returncode == 0 and f"{len(TASKS)} passed" in every.stdout, every.stdout + every.stderr


def test_the_command_line(tmp_path):
    made = _run("-m", "minidann.coursework", "make-assignment", str(tmp_path / "a"))
    assert made.returncode == 0, made.stderr
    graded = _run("-m", "minidann.coursework", "grade", str(tmp_path / "a"))
    assert graded.returncode == 1 and "score: 0 / " in graded.stdout
    listed = _run("-m", "minidann.coursework", "list")
    assert listed.returncode == 0 and all(t.name in listed.stdout for t in TASKS)
