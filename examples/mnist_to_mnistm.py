#!/usr/bin/env python
"""MNIST -> MNIST-M with domain-adversarial training, as in Ganin & Lempitsky (2015) and tf-dann.

Trains the paper's network source-only and with DANN (and, with ``--modes all``, on labelled target data, the
upper bound), then reports the last iterate's accuracies beside the paper's numbers. Outputs go to ``--out``:

    config.json       the resolved configuration (kernels and threads included), data and versions
    metrics.csv       step, mode, label_loss, domain_loss, domain_acc, lambda, lr, source_acc, target_acc
    results.json      {"modes": {mode: {source_acc, target_acc, domain_acc (dann), steps, seconds, ms_per_step}},
                       "proxy_a_distance", "device", "kernels", "seed", "data", "versions", "reference",
                       "embedding": {methods, points_per_domain, tsne_seconds (with t-SNE)}}
    curves.png        training curves; samples.png: MNIST above MNIST-M
    embedding.png     test features in 2-D coloured by domain, one column per model: PCA (--embedding pca), t-SNE
                      (tsne) or PCA above t-SNE (both)
    embedding_by_class.png  with --embedding tsne or both: the same points drawn as their digits (the paper's Fig. 5)
    checkpoints/      one <mode>.npz per mode (``--resume`` any of them to continue the run)
    .minidann-run.json, .minidann-run.lock   which files the run wrote; the lock held while it runs

With ``--seeds 0,1,2`` each seed's run writes the above to <out>/seed<N>, and <out>/seeds.md holds every seed's
accuracies with their mean, min-max and std per mode, beside the paper's numbers.

Progress goes to stderr: a bar on a terminal or in a notebook with ipywidgets; elsewhere (a log file, CI, nohup) one
line per evaluation with the step, the losses, the accuracies, the time elapsed and the estimated time left.

An output folder belongs to one run: one that holds files no run wrote, or another run's, is refused (unless
--overwrite), and so is a folder another run is using (the message names it). Ctrl-C, SIGTERM and SIGHUP stop
after the current step and save a checkpoint to resume from.

Exit status: 0 done, 2 bad usage / no GPU / no data / output folder refused, 3 a loss became NaN or inf, 4 a file
could not be written (the message names it, why, and the checkpoint to resume from), 128+N stopped by signal N
(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import platform
import shlex
import signal
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import minidann
from minidann.backend import GPUUnavailableError, resolve_device
from minidann.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from minidann.dann import (
    MODES,
    batch_rows,
    build_model,
    build_optimizer,
    evaluate,
    extract_features,
    halves_evenly,
    pixel_mean,
    prepare_mnist,
    prepare_mnistm,
    preprocess,
)
from minidann.data._common import write_text_atomic
from minidann.data.download import DataFolderNotWritable
from minidann.data.identity import data_identity, describe_data_difference
from minidann.dispatch import KERNELS
from minidann.fast.parallel import auto_threads, check_threads
from minidann.fast.tuning import blas_kernel
from minidann.io_errors import EXIT_WRITE_FAILED, WriteFailed, write_failed
from minidann.proxy_a_distance import proxy_a_distance
from minidann.run_folder import RunFolderError, claim_run_folder, read_manifest
from minidann.stop_signals import signal_exit_status
from minidann.train import METRIC_COLUMNS, DomainData, Trainer, TrainingDiverged, TrainingInterrupted
from minidann.viz import (
    embed_panels,
    plot_embedding,
    plot_embeddings,
    plot_embeddings_by_class,
    plot_sample_grid,
    plot_training_curves,
)

#: MNIST -> MNIST-M accuracies to print beside ours: JMLR Table 2 (Ganin et al., 2016) and the tf-dann notebook.
REFERENCE = {
    "source": {"jmlr_target_acc": 0.5225, "tfdann_source_acc": 0.9873, "tfdann_target_acc": 0.5342},
    "dann": {"jmlr_target_acc": 0.7666, "tfdann_source_acc": 0.9781, "tfdann_target_acc": 0.7076},
    "target": {"jmlr_target_acc": 0.9596, "tfdann_source_acc": None, "tfdann_target_acc": None},
}
LOG_EVERY = 50  # steps per metrics row and per NaN check (one device -> host copy per row)
CHECKPOINT_EVERY = 500  # steps between periodic checkpoints
EMBED_POINTS = 500  # test images per domain in the embedding plot
PAD_POINTS = 2000  # test images per domain for the proxy A-distance
PAD_MIN_POINTS = 8  # the fewest it accepts (minidann.proxy_a_distance)
DATA_SEED = 0  # MNIST-M is one fixed dataset: --seed varies the weights and the batches, not the data
EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
OTHER_OUT = "choose another --out"  # ends the fix of a failed write


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every default; options whose default is None say in words what happens."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mnist_to_mnistm.py", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to train; 'gpu' fails with the reason if CuPy or a GPU is missing, 'auto' falls back "
                        "to the CPU and says so")
    p.add_argument("--kernels", choices=KERNELS, default=None,
                   help="the layer of ops that trains and evaluates: fast (the default) computes the same functions "
                        "faster (on the CPU the batch as two halves, see minidann/fast/); reference runs the "
                        "textbook ops the docs quote, each step one forward and one backward pass over the whole "
                        "batch, on one thread (default: fast; with --resume, the run's own)")
    p.add_argument("--threads", choices=["auto", "1", "2"], default="auto",
                   help="fast kernels on the CPU only: 2 runs the two halves of every batch at once on two cores, 1 "
                        "one after the other (the same result bit for bit, see minidann/fast/parallel.py; 2 takes "
                        "about 0.6x the time on a 2-core machine, see docs/performance.md); auto: 2 on a CPU with at "
                        "least two cores when the batches halve, else 1 (always 1 with --kernels reference)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (every mode "
                   "starts from the same weights)")
    p.add_argument("--steps", type=int, default=8600, help="SGD steps per mode (tf-dann)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step; dann: half source, half target")
    p.add_argument("--modes", default="source,dann",
                   help="comma-separated from source, dann, target; 'all' = source,dann,target")
    p.add_argument("--data", choices=["auto", "embedded", "full"], default="auto",
                   help="full MNIST (downloaded if needed), the embedded 8,000/2,000 subset, or auto: full when "
                        "available, else embedded")
    p.add_argument("--data-dir", default=None,
                   help="data folder (default: $MINIDANN_DATA, else $XDG_CACHE_HOME/minidann, else "
                        "~/.cache/minidann)")
    p.add_argument("--no-verify", action="store_true", help="accept MNIST/BSDS500 files without checking hashes")
    p.add_argument("--out", default=None, help="output folder (default: a new folder runs/<date>-<time>-seed<N>; "
                   "with --resume, the folder of the checkpoint's run)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run that wrote this checkpoint (<run>/checkpoints/<mode>.npz) with its saved "
                        "configuration; finished modes are not retrained")
    p.add_argument("--overwrite", action="store_true",
                   help="use an --out that holds files this run did not write: another run's files are deleted, "
                        "files no run wrote are left alone (those of the same names as the run's are replaced); "
                        "never with --resume, and never a folder a running run holds")
    p.add_argument("--no-progress", action="store_true", help="no progress output (else a bar on a terminal or in a "
                   "notebook, one line per evaluation elsewhere)")
    p.add_argument("--eval-every", type=int, default=1000,
                   help="steps between test-set evaluations logged to metrics.csv (0: only at the end); they are "
                        "only logged, never used to choose anything")
    p.add_argument("--embedding", choices=("pca", "tsne", "both"), default="pca",
                   help="the 2-D embedding of the test features in embedding.png: pca (quick), tsne (the paper's "
                        "Fig. 5, scikit-learn's TSNE on one core: seconds per model, printed with the time it took) "
                        "or both (one row each); tsne and both also write embedding_by_class.png, the points drawn "
                        "as their digits")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="train once per seed, each run in <out>/seed<N>, and write <out>/seeds.md: every seed's "
                        "accuracies, their mean, min-max and std per mode, beside the paper's (not with --seed or "
                        "--resume; default: one run with --seed)")
    p.add_argument("--limit-train", type=int, default=0, metavar="N",
                   help="use only the first N images of each training set (0: all; else at least the images one "
                        "batch takes from a domain); for quick trials and tests")
    p.add_argument("--limit-test", type=int, default=0, metavar="N",
                   help="use only the first N images of each test set (0: all; else at least 8, which the proxy "
                        "A-distance needs); for quick trials and tests")
    # Testing aids for the NaN guard and Ctrl-C handling (hidden from --help).
    p.add_argument("--debug-nan-at", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug-interrupt-at", default=None, metavar="MODE:STEP[:SIGNAL]", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.overwrite and args.resume:
        p.error("--overwrite and --resume exclude each other: a resume keeps the run's files (give a new --out to "
                "continue the run elsewhere)")
    if args.modes == "all":
        args.modes = ",".join(MODES)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: unknown mode(s) {bad}; choose from {', '.join(MODES)} or 'all'")
    args.modes = [m for m in MODES if m in modes]  # always in the order source, dann, target
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.batch_size < 2 and "dann" in args.modes:
        p.error("--batch-size must be at least 2 for dann (one source and one target image)")
    for name in ("seed", "eval_every", "limit_train", "limit_test"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    # a mode draws its batch from one domain (source, target) or half from each (dann)
    per_domain = args.batch_size if {"source", "target"} & set(args.modes) else args.batch_size - args.batch_size // 2
    if 0 < args.limit_train < per_domain:
        p.error(f"--limit-train {args.limit_train} leaves fewer training images per domain than one batch takes "
                f"({per_domain} with --batch-size {args.batch_size} and these modes): use at least {per_domain}, "
                "or 0 for all")
    if args.seeds is not None:
        try:
            args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        except ValueError:
            p.error(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. --seeds 0,1,2")
        if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
            p.error("--seeds: give distinct integers >= 0, e.g. --seeds 0,1,2")
        if args.resume:
            p.error("--seeds and --resume are exclusive: resume each seed's run on its own (--resume "
                    "<out>/seed<N>/checkpoints/<mode>.npz)")
        p.set_defaults(seed=None)  # parse again to tell a --seed on the command line from its default
        if p.parse_args(argv).seed is not None:
            p.error("--seed and --seeds are exclusive: give one seed with --seed or several with --seeds")
    if 0 < args.limit_test < PAD_MIN_POINTS:
        p.error(f"--limit-test must be 0 (all) or at least {PAD_MIN_POINTS}: the proxy A-distance at the end of the "
                f"run needs {PAD_MIN_POINTS} test images per domain")
    return args


def resolve_threads(flag: str, device: str, kernels: str, batch_size: int, modes: list[str]) -> int:
    """--threads auto|1|2 -> 1 or 2; a ValueError with the reason when 2 cannot run (see check_threads).

    auto: 2 on a CPU with two cores or more, under the fast kernels, when every mode's batches halve; else 1.
    """
    if flag == "auto":
        halves = all(halves_evenly(batch_size, mode) for mode in modes)
        return auto_threads(device, kernels) if halves else 1
    for mode in modes:
        check_threads(int(flag), device, kernels, batch_rows(batch_size, mode))
    return int(flag)


def versions() -> dict[str, str | None]:
    """Versions of what produced the numbers (CuPy read from package metadata, so it is not imported here)."""
    out = {"python": platform.python_version(), "minidann": minidann.__version__, "numpy": np.__version__,
           "blas": blas_kernel()}
    for name in ("matplotlib", "scikit-image"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["cupy"] = None
    for dist in ("cupy-cuda12x", "cupy-cuda13x", "cupy"):
        try:
            out["cupy"] = f"{dist} {metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            pass
    return out


def new_run_dir(seed: int, command: str):
    """Claim a new folder runs/<date>-<time>-seed<N>[-k]: the next suffix when another run took one first."""
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    out = base
    for k in range(1, 1000):
        if not out.exists():
            try:
                return claim_run_folder(out, command=command)
            except RunFolderError:  # another run started in it between the check and the claim
                pass
        out = base.with_name(f"{base.name}-{k}")
    raise RunFolderError(f"no free run folder next to {base}; choose --out", base, "other")


class _Stopped(BaseException):
    """SIGTERM or SIGHUP outside training (loading the data, the figures): nothing to save, leave at once."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM and SIGHUP raise _Stopped, so that the run folder's lock is released on the way out (training
    replaces this with its own handlers, which finish the step and save)."""
    def stop(signum, frame):
        raise _Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), stop)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


#: What makes two checkpoints parts of one run: every mode starts from the seed's weights and trains on the same data
#: with the same batches and schedule length, on the same layer of ops.
RUN_KEYS = ("seed", "steps", "batch_size", "data_used", "limit_train", "limit_test", "kernels")
RUN_DEFAULTS = {"kernels": "fast"}  # what a configuration without the key ran


def foreign_checkpoint(ckpt: Checkpoint, mode: str, cfg: dict) -> str | None:
    """None when ``ckpt`` is mode ``mode`` of the run configured by ``cfg``, else what differs, in words."""
    if ckpt.meta.get("mode") != mode:
        return f"it is a checkpoint of mode {ckpt.meta.get('mode')!r}, not {mode!r}"
    theirs = ckpt.meta.get("config")
    if not isinstance(theirs, dict):
        return "it holds no run configuration"
    for key in RUN_KEYS:
        there, here = theirs.get(key, RUN_DEFAULTS.get(key)), cfg.get(key, RUN_DEFAULTS.get(key))
        if there != here:
            return f"{key.replace('_', ' ')} {there!r} there, {here!r} in this run"
    return None


# ------------------------------------------------------------------------------------------------------------
# metrics.csv


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.csv; a last row cut short (the run was killed, or the disk filled, mid-write) is left out."""
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):  # every complete row ends with a newline
        text = text[:text.rfind("\n") + 1]
    rows = []
    for r in csv.DictReader(io.StringIO(text, newline="")):
        try:
            rows.append({k: (r[k] if k == "mode" else int(r[k]) if k == "step" else
                             (float(r[k]) if r[k] != "" else None)) for k in METRIC_COLUMNS})
        except (TypeError, ValueError):  # a damaged row: the checkpoint's steps are retrained and logged again
            continue
    return rows


class MetricsWriter:
    """Appends rows to metrics.csv as they come (flushed, so a crash keeps what was logged).

    Raises WriteFailed (disk full, read-only, ...) naming the file and the fix."""

    def __init__(self, path: Path, rows: list[dict]):
        self.path, self.rows = path, list(rows)
        f = io.StringIO(newline="")  # rewrite, whole or not at all: on resume, rows after the checkpoints go
        w = csv.DictWriter(f, METRIC_COLUMNS)
        w.writeheader()
        w.writerows({k: self._fmt(r[k]) for k in METRIC_COLUMNS} for r in self.rows)
        write_text_atomic(path, f.getvalue(), alternative=OTHER_OUT)

    @staticmethod
    def _fmt(v):
        return "" if v is None else f"{v:.6g}" if isinstance(v, float) else v

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        try:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, METRIC_COLUMNS).writerow({k: self._fmt(row[k]) for k in METRIC_COLUMNS})
        except OSError as e:
            raise write_failed(self.path, e, alternative=OTHER_OUT, atomic=False) from e


# ------------------------------------------------------------------------------------------------------------
# the experiment


def load_data(cfg: dict):
    """Load MNIST and MNIST-M and preprocess them as tf-dann does (binarised MNIST, shared pixel mean)."""
    from minidann.data import load_digits_pair

    pair = load_digits_pair(source=cfg["data_used"] or cfg["data"], data_dir=cfg["data_dir"],
                            verify=cfg["verify"], seed=DATA_SEED)
    n_train, n_test = cfg["limit_train"] or None, cfg["limit_test"] or None
    train = DomainData(
        source_images=prepare_mnist(pair.mnist_train.images[:n_train]),
        source_labels=pair.mnist_train.labels[:n_train],
        target_images=prepare_mnistm(pair.mnistm_train.images[:n_train]),
        target_labels=pair.mnistm_train.labels[:n_train],
        mean=np.zeros(3, np.float32),
    )
    train.mean = pixel_mean(train.source_images, train.target_images)
    test = DomainData(
        source_images=prepare_mnist(pair.mnist_test.images[:n_test]), source_labels=pair.mnist_test.labels[:n_test],
        target_images=prepare_mnistm(pair.mnistm_test.images[:n_test]),
        target_labels=pair.mnistm_test.labels[:n_test], mean=train.mean,
    )
    return pair, train, test


def _debug_step(spec: str | None, mode: str) -> tuple[int | None, int]:
    """``"dann:6"`` -> (6, SIGINT) in mode dann, (None, SIGINT) in other modes; ``"dann:6:TERM"`` sends SIGTERM
    (a testing aid)."""
    if spec is None:
        return None, signal.SIGINT
    parts = spec.split(":")
    signum = getattr(signal, "SIG" + parts.pop()) if not parts[-1].isdigit() else signal.SIGINT
    target, step = (parts[0] if len(parts) > 1 else ""), parts[-1]
    return (int(step) if target in ("", mode) else None), signum


def run_mode(mode: str, cfg: dict, device: str, train: DomainData, test: DomainData, out: Path,
             resume: Checkpoint | None, on_row, progress: bool, args) -> tuple[dict, object]:
    """Train (or reload, from ``resume``) one mode; return its results and its model."""
    rng = np.random.default_rng(cfg["seed"])  # the same seed per mode: every mode starts from the same weights
    model = build_model(rng, device)
    optimizer = build_optimizer(model)

    def evaluate_test(m):
        return evaluate(m, test.source_images, test.source_labels, test.target_images, test.target_labels,
                        test.mean)

    trainer = Trainer(
        model, optimizer, train, mode, cfg["steps"], cfg["batch_size"], rng, log_every=LOG_EVERY,
        eval_every=cfg["eval_every"], evaluate=evaluate_test, checkpoint_path=out / "checkpoints" / f"{mode}.npz",
        checkpoint_every=CHECKPOINT_EVERY, meta={"config": cfg}, on_row=on_row, progress=progress,
        nan_at_step=args.debug_nan_at, interrupt_at_step=_debug_step(args.debug_interrupt_at, mode)[0],
        threads=cfg["threads"], kernels=cfg["kernels"], interrupt_signal=_debug_step(args.debug_interrupt_at, mode)[1],
    )
    if resume is not None:
        trainer.restore(resume)
        done = trainer.step == trainer.num_steps
        print(f"{mode}: {'finished' if done else 'resuming'} from {resume.path} at step {trainer.step}", flush=True)
        if not done:
            trainer.run()
        elif resume.path != trainer.checkpoint_path:
            trainer.save()  # keep every mode's checkpoint in the new output folder
    else:
        trainer.run()
    result = dict(trainer.last_eval)
    if mode != "dann":
        result.pop("domain_acc", None)  # G_d is trained only in dann mode
    result.update(steps=trainer.step, seconds=round(trainer.train_seconds + trainer.eval_seconds, 3),
                  ms_per_step=round(1000 * trainer.train_seconds / trainer.step, 3),
                  train_seconds=round(trainer.train_seconds, 3), eval_seconds=round(trainer.eval_seconds, 3))
    return result, model


def compute_pad(models: dict, test: DomainData) -> dict | None:
    """Proxy A-distance between MNIST test and MNIST-M test: raw pixels, source-only and DANN features."""
    n = min(PAD_POINTS, len(test.source_images), len(test.target_images))
    xs, xt = test.source_images[:n], test.target_images[:n]
    pad = {"raw_pixels": proxy_a_distance(preprocess(xs, test.mean).reshape(n, -1),
                                          preprocess(xt, test.mean).reshape(n, -1), seed=0)}
    for mode, key in (("source", "source_only_features"), ("dann", "dann_features"), ("target", "target_features")):
        if mode in models:
            m = models[mode]
            pad[key] = proxy_a_distance(extract_features(m, xs, test.mean), extract_features(m, xt, test.mean), seed=0)
    pad = {k: float(v) for k, v in pad.items()}
    pad["points_per_domain"] = n
    return pad


def fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def results_table(results: dict) -> str:
    lines = [
        "MNIST -> MNIST-M, accuracy of the last iterate (nothing selected on test data)",
        f"{'mode':<8} {'MNIST':>7} {'MNIST-M':>8} | {'JMLR MNIST-M':>12} | "
        f"{'tf-dann MNIST':>13} {'tf-dann MNIST-M':>15}",
    ]
    for mode, r in results["modes"].items():
        ref = REFERENCE[mode]
        lines.append(f"{mode:<8} {fmt(r['source_acc']):>7} {fmt(r['target_acc']):>8} | "
                     f"{fmt(ref['jmlr_target_acc']):>12} | {fmt(ref['tfdann_source_acc']):>13} "
                     f"{fmt(ref['tfdann_target_acc']):>15}")
    if "dann" in results["modes"]:
        lines.append(f"DANN domain accuracy on the test sets: {fmt(results['modes']['dann']['domain_acc'])} "
                     "(0.5 = the domain classifier is at chance)")
    pad = results.get("proxy_a_distance")
    if pad:
        parts = [f"{k.replace('_', ' ')} {v:.3f}" for k, v in pad.items() if k != "points_per_domain"]
        lines.append(f"proxy A-distance (MNIST test vs MNIST-M test, {pad['points_per_domain']} per domain; 0 = "
                     f"indistinguishable, 2 = separable): " + ", ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# embeddings and several seeds


def plot_embedding_figures(panels: dict, test: DomainData, n: int, embedding: str, out: Path) -> dict:
    """Write embedding.png (and, with t-SNE, embedding_by_class.png) from each model's (n, D) source and target
    test features; what was drawn and how long t-SNE took."""
    if embedding == "pca":
        plot_embedding(panels, out / "embedding.png")  # PCA, one row
        return {"methods": ["pca"], "points_per_domain": n}
    methods = ("pca", "tsne") if embedding == "both" else ("tsne",)
    emb = embed_panels(panels, ("pca",)) if "pca" in methods else {}
    t0 = time.perf_counter()
    emb.update(embed_panels(panels, ("tsne",), seed=0))
    seconds = time.perf_counter() - t0
    print(f"t-SNE of {n} + {n} test features, {len(panels)} model(s): {seconds:.1f} s", flush=True)
    plot_embeddings(panels, out / "embedding.png", methods, embeddings=emb)
    plot_embeddings_by_class(panels, (test.source_labels[:n], test.target_labels[:n]), out / "embedding_by_class.png",
                             methods, embeddings=emb)
    return {"methods": list(methods), "points_per_domain": n, "tsne_seconds": round(seconds, 3)}


SEED_COLUMNS = (("source_acc", "MNIST"), ("target_acc", "MNIST-M"), ("domain_acc", "domain acc"))


def seeds_summary(per_seed: dict) -> dict:
    """{seed: {mode: {source_acc, target_acc, domain_acc?}}} -> {mode: {key: {n, mean, min, max, std}}};
    std is the sample standard deviation (n - 1), None for one seed."""
    summary = {}
    modes = [m for m in MODES if any(m in r for r in per_seed.values())]
    for mode in modes:
        summary[mode] = {}
        for key, _ in SEED_COLUMNS:
            v = np.array([r[mode][key] for r in per_seed.values() if r.get(mode, {}).get(key) is not None], float)
            if len(v):
                summary[mode][key] = {"n": len(v), "mean": float(v.mean()), "min": float(v.min()),
                                      "max": float(v.max()), "std": float(v.std(ddof=1)) if len(v) > 1 else None}
    return summary


def seeds_table(per_seed: dict) -> str:
    """A Markdown table of every seed's accuracies per mode (as results.json's "modes"), then their mean,
    min-max and std, then the paper's and tf-dann's numbers."""
    summary = seeds_summary(per_seed)
    head = ["mode", "seed"] + [name for _, name in SEED_COLUMNS]
    lines = [f"MNIST -> MNIST-M over {len(per_seed)} seed(s), accuracy of the last iterate; std: sample standard "
             "deviation (n - 1)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def add(mode, label, cells):
        lines.append("| " + " | ".join([mode, label, *cells]) + " |")

    for mode, stats in summary.items():
        for seed, r in per_seed.items():
            if mode in r:
                add(mode, str(seed), [fmt(r[mode].get(key)) for key, _ in SEED_COLUMNS])
        add(mode, "mean", [fmt(stats[k]["mean"]) if k in stats else "-" for k, _ in SEED_COLUMNS])
        add(mode, "min-max", [f"{fmt(stats[k]['min'])}-{fmt(stats[k]['max'])}" if k in stats else "-"
                              for k, _ in SEED_COLUMNS])
        add(mode, "std", [fmt(stats[k]["std"]) if k in stats else "-" for k, _ in SEED_COLUMNS])
        ref = REFERENCE[mode]
        add(mode, "JMLR", ["-", fmt(ref["jmlr_target_acc"]), "-"])
        add(mode, "tf-dann", [fmt(ref["tfdann_source_acc"]), fmt(ref["tfdann_target_acc"]), "-"])
    return "\n".join(lines)


def run_seeds(args: argparse.Namespace, argv: list[str] | None) -> int:
    """One run per seed of ``args.seeds`` in <out>/seed<N>, then <out>/seeds.md; the first failing run's status."""
    if args.out:
        base = Path(args.out)
    else:  # runs/<date>-<time>-seeds0-1-2, a new folder (each seed's run claims its own subfolder)
        base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-seeds{'-'.join(map(str, args.seeds))}"
        k = 0
        while base.exists():
            k += 1
            base = base.with_name(f"{base.name.rsplit('~', 1)[0]}~{k}")
    if (base / "seeds.md").exists() and not args.overwrite:  # never replace a table without being asked
        print(f"error: {base / 'seeds.md'} exists already: choose another --out, or --overwrite to replace it",
              file=sys.stderr)
        return 2
    per_seed = {}
    for seed in args.seeds:
        out = base / f"seed{seed}"
        print(f"=== seed {seed} ({len(per_seed) + 1} of {len(args.seeds)}), {out}", flush=True)
        code = main(argv, argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "out": str(out)}))
        if code != 0:
            print(f"error: the run of seed {seed} stopped (exit status {code}); the finished seeds are in {base}",
                  file=sys.stderr)
            return code
        per_seed[seed] = json.loads((out / "results.json").read_text())["modes"]
        print()
    table = seeds_table(per_seed)
    write_text_atomic(base / "seeds.md", table + "\n", alternative=OTHER_OUT)
    print(table)
    print(f"\ntable in {base / 'seeds.md'}; each seed's outputs in {base}/seed<N>")
    return 0


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Run the example with the command line ``argv`` (default sys.argv), or with ``args`` already parsed."""
    args = parse_args(argv) if args is None else args
    if args.seeds:
        return run_seeds(args, argv)
    try:
        device, device_note = resolve_device(args.device)
    except GPUUnavailableError as e:
        print(f"error: --device {args.device}: {e}", file=sys.stderr)
        return EXIT_USAGE

    # The configuration: from the flags, or on --resume from the checkpoint (so the run continues unchanged).
    resume_dir = None
    if args.resume:
        try:
            ckpt = load_checkpoint(args.resume)
        except CheckpointError as e:
            fix = (". Fix: resume from another checkpoint of the run (<run>/checkpoints/<mode>.npz), or start the "
                   "run again") if Path(args.resume).is_file() else ""  # (a missing path's message says where to look)
            print(f"error: --resume: {e}{fix}", file=sys.stderr)
            return EXIT_USAGE
        if not isinstance(ckpt.meta.get("config"), dict) or ckpt.meta.get("mode") not in MODES:
            print(f"error: --resume: {ckpt.path} holds no run of this example (no run configuration or mode in "
                  "it); a checkpoint saved from your own code loads with minidann.checkpoint.load_checkpoint",
                  file=sys.stderr)
            return EXIT_USAGE
        cfg = dict(ckpt.meta["config"])
        run_kernels = cfg.get("kernels", RUN_DEFAULTS["kernels"])
        if args.kernels is not None and args.kernels != run_kernels:
            print(f"error: --kernels {args.kernels}: this run trained with --kernels {run_kernels}, and a resumed run "
                  f"goes on with its own kernels (the other layer rounds differently, so the run would not end as "
                  f"an uninterrupted one would); leave --kernels out or give --kernels {run_kernels}, or start a "
                  f"new run", file=sys.stderr)
            return EXIT_USAGE
        cfg["kernels"] = run_kernels
        resume_dir = ckpt.path.parent
        # the run folder of the checkpoint: <run>/checkpoints/<mode>.npz with the run's manifest in <run>
        ckpt_run = resume_dir.parent if read_manifest(resume_dir.parent) is not None else None
        if args.out:
            out = Path(args.out)
        elif ckpt_run is None:
            print(f"error: --resume: {ckpt.path} is not in the folder of a run (no <run>/checkpoints/ with the run's "
                  ".minidann-run.json beside it), and continuing there would mix the run's files with files it "
                  f"did not write. Fix: give the continued run a new folder: --resume {ckpt.path} --out NEW_FOLDER",
                  file=sys.stderr)
            return EXIT_USAGE
        else:
            out = ckpt_run
        in_place = ckpt_run is not None and out.resolve() == ckpt_run.resolve()
        if (out / "config.json").exists() and not in_place:
            print(f"error: --out {out} already holds another run, which resuming into it would overwrite; choose "
                  f"an empty --out, or leave --out out to continue in the checkpoint's own run folder "
                  f"{ckpt_run or resume_dir.parent}", file=sys.stderr)
            return EXIT_USAGE
        defaults = vars(parse_args([]))
        ignored = [f"--{f.replace('_', '-')}" for f in ("seed", "steps", "batch_size", "modes", "data", "data_dir",
                                                        "eval_every", "limit_train", "limit_test")
                   if getattr(args, f) != defaults[f] and getattr(args, f) != cfg.get(f)]
        if ignored:
            print(f"note: --resume keeps the checkpoint's configuration; ignoring {', '.join(ignored)}")
        cfg.update(resumed_from=str(ckpt.path))
    else:
        out, in_place, ckpt_run = (Path(args.out) if args.out else None), False, None  # (None: a new runs/ folder)
        cfg = {
            "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "modes": args.modes,
            "kernels": args.kernels or "fast",
            "data": args.data, "data_used": None, "data_dir": args.data_dir, "verify": not args.no_verify,
            "eval_every": args.eval_every, "limit_train": args.limit_train, "limit_test": args.limit_test,
            "log_every": LOG_EVERY, "checkpoint_every": CHECKPOINT_EVERY,
            "optimizer": "SGD, momentum 0.9, lr mu_p = 0.01 / (1 + 10 p)^0.75",
            "lambda": "lambda_p = 2 / (1 + exp(-10 p)) - 1, p = (step - 1) / steps",
            "init": "truncated normal std 0.1 weights, bias 0.1 (tf-dann)",
            "preprocessing": "MNIST binarised (x > 0 -> 255) and repeated to 3 channels; minus the per-channel "
                             "pixel mean of MNIST-train + MNIST-M-train; divided by 255",
        }
    if out is not None and out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file; the run needs a folder: choose another --out", file=sys.stderr)
        return EXIT_USAGE
    # On --resume, every mode's checkpoint in that folder must belong to this run: checked before anything is
    # written, so a refused resume leaves the run as it was.
    resumed = {}  # mode -> its checkpoint
    if resume_dir is not None:
        resumed[ckpt.meta["mode"]] = ckpt  # whatever its file is called
        for mode in cfg["modes"] if ckpt_run is not None else ():  # (a lone checkpoint has no run beside it)
            path = resume_dir / f"{mode}.npz"
            if mode in resumed or not path.is_file():
                continue
            try:
                resumed[mode] = load_checkpoint(path)
            except CheckpointError as e:
                print(f"error: --resume: {e}. Fix: delete {path} to train mode {mode} again", file=sys.stderr)
                return EXIT_USAGE
            other = foreign_checkpoint(resumed[mode], mode, cfg)
            if other:
                print(f"error: --resume: {path} belongs to another run ({other}). Fix: delete it to train mode "
                      f"{mode} again with this run's configuration", file=sys.stderr)
                return EXIT_USAGE
    # The thread count is how the run uses this machine, not part of its configuration (it never changes the
    # numbers; see minidann/fast/parallel.py), so a resumed run takes it from the flag like the device.
    try:
        cfg["threads"] = resolve_threads(args.threads, device, cfg["kernels"], cfg["batch_size"], cfg["modes"])
    except ValueError as e:
        print(f"error: --threads {args.threads} with --kernels {cfg['kernels']} and --batch-size {cfg['batch_size']}"
              f": {e}", file=sys.stderr)
        return EXIT_USAGE
    # The output folder is claimed (writable, free of files this run did not write, locked for the whole run)
    # before the data load, so that a refusal costs nothing and the run never writes into another's folder.
    command = shlex.join(sys.argv)
    try:
        run = (new_run_dir(cfg["seed"], command) if out is None else
               claim_run_folder(out, overwrite=args.overwrite, resume=in_place, command=command))
    except RunFolderError as e:
        print(f"error: --out: {e}", file=sys.stderr)
        if e.reason == "other_run":  # name the checkpoint a resume would start from
            saved = [e.path / "checkpoints" / f"{m}.npz" for m in MODES
                     if (e.path / "checkpoints" / f"{m}.npz").is_file()]
            print(f"  to continue it: --resume {saved[0]}" if saved else "  it stopped before its first checkpoint, "
                  "so there is nothing to resume", file=sys.stderr)
        return EXIT_USAGE
    except WriteFailed as e:
        print(f"error: --out: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    out = run.path
    cfg.update(device=args.device, device_used=device, out=str(out), command=command)
    with run, _stop_on_signals(), minidann.kernels(cfg["kernels"]):  # (training, evaluation, figures: its kernels)
        try:
            return run_experiment(cfg, device, device_note, run, ckpt_run, resumed, args, argv)
        except WriteFailed as e:
            print(f"\nerror: {e}", file=sys.stderr)
            _print_resume(out, cfg, argv, getattr(e, "last_checkpoint", None))
            return EXIT_WRITE_FAILED
        except _Stopped as e:
            print(f"\n{signal.Signals(e.signum).name}: stopped outside training, nothing to save; the checkpoints "
                  f"so far are in {out / 'checkpoints'}", file=sys.stderr)
            return signal_exit_status(e.signum)


def _print_resume(out: Path, cfg: dict, argv: list[str] | None, last: tuple[Path, int] | None) -> None:
    """After a failed write: the command that continues the run from its last good checkpoint."""
    saved = [out / "checkpoints" / f"{m}.npz" for m in cfg["modes"] if (out / "checkpoints" / f"{m}.npz").is_file()]
    path = last[0] if last else (saved[-1] if saved else None)
    script = sys.argv[0] if argv is None else "examples/mnist_to_mnistm.py"
    if path is None:
        print("no checkpoint was saved yet: once the cause is fixed, start the run again", file=sys.stderr)
    else:
        print(f"once the cause is fixed, resume with: python {script} --resume {path}", file=sys.stderr)


def run_experiment(cfg: dict, device: str, device_note: str, run, ckpt_run: Path | None,
                   resumed: dict[str, Checkpoint], args: argparse.Namespace, argv: list[str] | None) -> int:
    """Load the data, train every mode, write the outputs and print the table; the exit status.

    ``run`` is the claimed :class:`~minidann.run_folder.RunFolder`; ``ckpt_run`` the run folder of a resumed
    checkpoint (where the metrics so far are), or None."""
    out = run.path
    run.record("config.json", "metrics.csv", "results.json", "samples.png", "curves.png", "embedding.png",
               "embedding_by_class.png",
               *(f"checkpoints/{m}.npz" for m in cfg["modes"]))
    cfg["embedding"] = args.embedding  # a figure choice, not part of the run: on --resume too, from the flag
    print("minidann MNIST -> MNIST-M")
    print(device_note)
    if device == "cpu":
        print(f"  blas         {blas_kernel()} (see docs/performance.md)")
    for k in ("seed", "steps", "batch_size", "modes", "data", "data_dir", "eval_every", "limit_train", "limit_test",
              "kernels", "threads", "out"):
        print(f"  {k:<12} {cfg[k]}")
    try:
        pair, train, test = load_data(cfg)
    except DataFolderNotWritable as e:  # (a download or the MNIST-M cache could not be written)
        print(f"error: data: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except ValueError as e:  # minidann.data.DataError: missing, malformed or unverified files
        print(f"error: data: {e}", file=sys.stderr)
        return EXIT_USAGE
    # A resume trains on the data it started with: each resumed checkpoint recorded what identifies them.
    identity = data_identity(pair, seed=DATA_SEED, data_dir=cfg["data_dir"], limit_train=cfg["limit_train"],
                             limit_test=cfg["limit_test"], pixel_mean=train.mean, verify=cfg["verify"])
    for c in resumed.values():
        saved = c.meta["config"].get("data_identity")
        why = None if saved is None else describe_data_difference(saved, identity)
        if saved is None:
            print(f"note: {c.path} records no identity of its data, so it cannot be checked that they are the same",
                  file=sys.stderr)
        elif why:
            print(f"error: --resume: the data changed since {c.path} was saved: {why}. Fix: restore the data folder "
                  "as it was, or start a new run", file=sys.stderr)
            return EXIT_USAGE
    cfg["data_identity"] = identity
    if cfg["data_used"] is None:
        cfg["data_used"] = pair.source  # a resumed run loads exactly these data again, even under --data auto
    print(f"data: {pair.description}")
    print(f"      {pair.reason}")
    print(f"      train {len(train.source_labels):,} + {len(train.target_labels):,}, test "
          f"{len(test.source_labels):,} + {len(test.target_labels):,}; "
          f"pixel mean {[round(float(m), 2) for m in train.mean]}",
          flush=True)
    data_info = {"source": pair.source, "backgrounds": pair.backgrounds, "description": pair.description,
                 "reason": pair.reason, "train": len(train.source_labels), "test": len(test.source_labels),
                 "mnistm_seed": DATA_SEED}
    write_text_atomic(out / "config.json", json.dumps({**cfg, "data_info": data_info, "versions": versions()},
                                                      indent=2), alternative=OTHER_OUT)

    # metrics.csv: on resume, keep the rows each mode's checkpoint covers
    old_rows = read_metrics(ckpt_run / "metrics.csv") if ckpt_run is not None else []
    covered = {mode: c.meta["step"] for mode, c in resumed.items()}
    writer = MetricsWriter(out / "metrics.csv", [r for r in old_rows if r["step"] <= covered.get(r["mode"], 0)])

    plot_sample_grid(test.source_images, test.target_images, out / "samples.png")
    progress = not args.no_progress
    results = {"modes": {}}
    models = {}
    try:
        for mode in cfg["modes"]:
            results["modes"][mode], models[mode] = run_mode(mode, cfg, device, train, test, out, resumed.get(mode),
                                                            writer, progress, args)
            r = results["modes"][mode]
            print(f"{mode}: MNIST {r['source_acc']:.4f}, MNIST-M {r['target_acc']:.4f}, {r['steps']} steps in "
                  f"{r['seconds']:.1f} s ({r['ms_per_step']:.1f} ms/step)", flush=True)
    except TrainingInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        if e.checkpoint is not None:
            print(f"resume with: python {sys.argv[0] if argv is None else 'examples/mnist_to_mnistm.py'} --resume "
                  f"{e.checkpoint}", file=sys.stderr)
        return e.exit_status
    except TrainingDiverged as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"\ninterrupted without a new checkpoint; the checkpoints so far are in {out / 'checkpoints'}",
              file=sys.stderr)
        return EXIT_INTERRUPTED

    # Figures and the proxy A-distance, from the final weights.
    n = min(EMBED_POINTS, len(test.source_images), len(test.target_images))
    panels = {}
    for mode, title in (("source", "source only"), ("dann", "DANN"), ("target", "train on target")):
        if mode in models:
            m = models[mode]
            panels[title] = (extract_features(m, test.source_images[:n], test.mean),
                             extract_features(m, test.target_images[:n], test.mean))
    figures = plot_embedding_figures(panels, test, n, cfg["embedding"], out)
    plot_training_curves(writer.rows, out / "curves.png")
    results["proxy_a_distance"] = compute_pad(models, test)
    results.update(device=device, kernels=cfg["kernels"], seed=cfg["seed"], data=data_info, versions=versions(),
                   reference=REFERENCE, embedding=figures)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2), alternative=OTHER_OUT)

    print()
    print(results_table(results))
    print(f"\noutputs in {out}: config.json, metrics.csv, results.json, curves.png, samples.png, embedding.png, "
          + ("embedding_by_class.png, " if cfg["embedding"] != "pca" else "") + "checkpoints/")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C outside training (loading data, plotting): nothing to save
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
