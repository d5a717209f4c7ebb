"""The example's course features: --embedding, progress lines where no bar shows, and --seeds with its table."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from example_script import PNG_MAGIC, ROOT, SCRIPT, load_example

from minidann.progress import PlainLines, progress_style

example = load_example("mnist_to_mnistm_course")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny_args(data_dir, out, *extra, steps=16, seed=("--seed", "0")):
    """The tiny run of tests/test_example_mnist.py: 200 training and 60 test images per domain, batch 8."""
    return ["--device", "cpu", "--data", "embedded", "--data-dir", str(data_dir), "--out", str(out),
            "--steps", str(steps), "--batch-size", "8", "--limit-train", "200", "--limit-test", "60",
            "--eval-every", "8", "--modes", "source,dann", *seed, *extra]


# ------------------------------------------------------------------------------------------------------------
# --embedding


def test_embedding_both_writes_both_figures_and_records_the_choice(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert example.main(tiny_args(data_dir, out, "--no-progress", "--embedding", "both")) == 0
    stdout = capsys.readouterr().out
    for name in ("embedding.png", "embedding_by_class.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert json.loads((out / "config.json").read_text())["embedding"] == "both"
    figures = json.loads((out / "results.json").read_text())["embedding"]
    assert figures["methods"] == ["pca", "tsne"] and figures["points_per_domain"] == 60
    assert figures["tsne_seconds"] > 0
    assert re.search(r"t-SNE of 60 \+ 60 test features, 2 model\(s\): \d+\.\d s", stdout)
    assert "embedding_by_class.png" in stdout


def test_embedding_pca_is_the_default_and_writes_one_figure(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert example.main(tiny_args(data_dir, out, "--no-progress")) == 0
    assert "t-SNE" not in capsys.readouterr().out
    assert (out / "embedding.png").read_bytes()[:8] == PNG_MAGIC
    assert not (out / "embedding_by_class.png").exists()
    assert json.loads((out / "config.json").read_text())["embedding"] == "pca"
    assert json.loads((out / "results.json").read_text())["embedding"]["methods"] == ["pca"]


# ------------------------------------------------------------------------------------------------------------
# progress

LINE = re.compile(r"^(?P<mode>source|dann) step (?P<step>\d+)/16 \(\d+\.\d%\) label_loss \d+\.\d{4}"
                  r"(?P<domain> domain_loss \d+\.\d{4} domain_acc \d\.\d{3})? source_acc \d\.\d{4} "
                  r"target_acc \d\.\d{4} elapsed \d+:\d\d:\d\d eta \d+:\d\d:\d\d$")


def _run_script(args):
    # stderr to a pipe: neither a terminal nor a notebook
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(data_dir, tmp_path):
    proc = _run_script(tiny_args(data_dir, tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if " step " in ln]
    assert lines, proc.stderr
    matched = [LINE.match(ln) for ln in lines]
    assert all(matched), lines
    # one line per evaluation (every 8 steps and at the end), in order; the domain terms only in dann mode
    assert [(m["mode"], int(m["step"])) for m in matched] == [("source", 8), ("source", 16), ("dann", 8),
                                                               ("dann", 16)]
    assert [bool(m["domain"]) for m in matched] == [False, False, True, True]
    assert "\r" not in proc.stderr  # no bar redrawing itself into the log


def test_no_progress_prints_no_progress_lines(data_dir, tmp_path):
    proc = _run_script(tiny_args(data_dir, tmp_path / "run", "--no-progress"))
    assert proc.returncode == 0, proc.stderr
    assert " step " not in proc.stderr and "eta" not in proc.stderr, proc.stderr


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_style_picks_bar_lines_or_nothing():
    assert progress_style(True, _Tty()) == "bar"
    assert progress_style(True, io.StringIO()) == "lines"
    assert progress_style(False, _Tty()) is None and progress_style(False, io.StringIO()) is None


def test_plain_lines_estimate_the_time_left_from_the_steps_so_far():
    t = [100.0]
    stream = io.StringIO()
    lines = PlainLines("dann", 1000, start_step=200, stream=stream, clock=lambda: t[0])
    t[0] += 90.0  # 300 steps since the resume in 90 s: 500 left take 150 s
    lines({"step": 500, "label_loss": 0.5, "domain_loss": 0.69, "domain_acc": 0.5, "source_acc": 0.98,
           "target_acc": 0.7})
    lines({"step": 550, "label_loss": 0.5, "domain_loss": 0.69, "domain_acc": 0.5, "source_acc": None,
           "target_acc": None})  # no evaluation in this row: no line
    assert stream.getvalue() == ("dann step 500/1000 (50.0%) label_loss 0.5000 domain_loss 0.6900 domain_acc 0.500 "
                                 "source_acc 0.9800 target_acc 0.7000 elapsed 0:01:30 eta 0:02:30\n")


# ------------------------------------------------------------------------------------------------------------
# --seeds


def _table_rows(text):
    """The Markdown table -> {(mode, label): [cells]}."""
    rows = {}
    for ln in text.splitlines():
        if ln.startswith("| ") and not ln.startswith("| mode"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_seeds_summary_and_table_give_mean_and_spread():
    per_seed = {0: {"source": {"source_acc": 0.9, "target_acc": 0.5}, "dann": {"source_acc": 0.8, "target_acc": 0.6,
                                                                               "domain_acc": 0.55}},
                1: {"source": {"source_acc": 0.7, "target_acc": 0.4}, "dann": {"source_acc": 0.9, "target_acc": 0.8,
                                                                               "domain_acc": 0.65}},
                2: {"source": {"source_acc": 0.8, "target_acc": 0.6}, "dann": {"source_acc": 0.7, "target_acc": 0.7,
                                                                               "domain_acc": 0.6}}}
    s = example.seeds_summary(per_seed)
    assert s["dann"]["target_acc"]["mean"] == pytest.approx(0.7)
    assert (s["dann"]["target_acc"]["min"], s["dann"]["target_acc"]["max"]) == (0.6, 0.8)
    assert s["dann"]["target_acc"]["std"] == pytest.approx(0.1)  # sample std of 0.6, 0.7, 0.8
    assert "domain_acc" not in s["source"] and s["source"]["source_acc"]["n"] == 3
    rows = _table_rows(example.seeds_table(per_seed))
    assert rows[("dann", "mean")] == ["0.8000", "0.7000", "0.6000"]
    assert rows[("dann", "min-max")] == ["0.7000-0.9000", "0.6000-0.8000", "0.5500-0.6500"]
    assert rows[("dann", "std")] == ["0.1000", "0.1000", "0.0500"]
    assert rows[("source", "2")] == ["0.8000", "0.6000", "-"]
    assert rows[("dann", "JMLR")] == ["-", "0.7666", "-"]
    assert rows[("source", "tf-dann")] == ["0.9873", "0.5342", "-"]
    one = example.seeds_summary({5: per_seed[0]})
    assert one["dann"]["target_acc"]["std"] is None  # no spread from one seed


def test_seeds_runs_each_seed_and_writes_the_table(data_dir, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert example.main(tiny_args(data_dir, out, "--no-progress", "--seeds", "0,1", seed=())) == 0
    stdout = capsys.readouterr().out
    per_seed = {}
    for seed in (0, 1):
        run_dir = out / f"seed{seed}"
        assert json.loads((run_dir / "config.json").read_text())["seed"] == seed
        per_seed[seed] = json.loads((run_dir / "results.json").read_text())["modes"]
    table = (out / "seeds.md").read_text()
    assert table.strip() in stdout
    rows = _table_rows(table)
    for mode in ("source", "dann"):
        for col, key in enumerate(("source_acc", "target_acc")):
            values = [per_seed[s][mode][key] for s in (0, 1)]
            assert [rows[(mode, str(s))][col] for s in (0, 1)] == [f"{v:.4f}" for v in values]
            assert rows[(mode, "mean")][col] == f"{np.mean(values):.4f}"
            assert rows[(mode, "min-max")][col] == f"{min(values):.4f}-{max(values):.4f}"
            assert rows[(mode, "std")][col] == f"{np.std(values, ddof=1):.4f}"


@pytest.mark.parametrize("argv", [["--seed", "1", "--seeds", "0,1"], ["--seeds", "0,1", "--seed", "0"],
                                  ["--seeds", "0,x"], ["--seeds", "1,1"], ["--seeds", "0,1", "--resume", "a.npz"]])
def test_bad_seeds_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(argv)
    assert info.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_seed_with_seeds_exits_2_from_the_command_line(data_dir, tmp_path):
    # the tiny run's flags, so that a parser which let it through would run briefly and offline
    proc = _run_script(tiny_args(data_dir, tmp_path, "--no-progress", "--steps", "1", "--seeds", "0,1",
                                 seed=("--seed", "3")))
    assert proc.returncode == 2 and "--seed and --seeds are exclusive" in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_progress_style_shows_the_bar_in_a_notebook_with_widgets(monkeypatch):
    """In a Jupyter kernel stderr is no terminal, yet tqdm.auto draws its notebook bar there when ipywidgets is
    installed (without it, tqdm falls back to its terminal bar, which stays silent there: plain lines then)."""
    import types

    import minidann.progress

    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setattr(minidann.progress, "has_widgets", lambda: True)
    assert progress_style(True, io.StringIO()) == "bar"
    monkeypatch.setattr(minidann.progress, "has_widgets", lambda: False)
    assert progress_style(True, io.StringIO()) == "lines"
    monkeypatch.setattr(minidann.progress, "has_widgets", lambda: True)
    shell.config = {}  # plain IPython in a terminal: not a notebook
    assert progress_style(True, io.StringIO()) == "lines"


NOTEBOOK_CELL = '''
import numpy as np
from minidann.dann import build_model, build_optimizer
from minidann.train import DomainData, Trainer
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (40, 3, 28, 28), dtype=np.uint8)
y = rng.integers(0, 10, 40)
data = DomainData(source_images=x, source_labels=y, target_images=x, target_labels=y, mean=np.zeros(3, np.float32))
model = build_model(rng)
Trainer(model, build_optimizer(model), data, "dann", 8, 8, rng, log_every=4, eval_every=4,
        evaluate=lambda m: {"source_acc": 0.5, "target_acc": 0.5}).run()
'''


def test_progress_in_a_real_notebook_kernel_is_a_bar_or_the_plain_lines():
    """The Trainer in a Jupyter kernel: the notebook bar (a widget) with ipywidgets, else the plain lines."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from minidann.progress import has_widgets

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if has_widgets():
        assert widgets and " step " not in text, outputs
    else:
        assert not widgets and "dann step 4/8 (50.0%)" in text and "dann step 8/8 (100.0%)" in text, outputs
