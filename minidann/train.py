"""The training loop of one mode: batches, schedules, logging, the NaN guard, checkpoints and Ctrl-C.

:class:`Trainer` runs :func:`minidann.dann.train_step` ``num_steps`` times. Everything around the step lives
here and stays off the device's critical path:

- Batches: :class:`~minidann.batches.DomainBatches`, epoch-wise shuffles drawn from the run's host generator
  (tf-dann's ``batch_generator``), gathered on the host. On the CPU they are preprocessed there; on a GPU their
  uint8 pixels and their labels go in one host-to-device copy and are preprocessed on the device, with the same
  arithmetic (:mod:`minidann.fast.batch_copy`). The labels are range-checked on the host once, when the Trainer
  is made, so that the loss can trust device labels without waiting for the device to check them.
- Kernels: ``kernels=`` (default: the active layer) applies while :meth:`Trainer.run` runs and goes into every
  checkpoint; restoring one trained with the other layer is refused. Fast kernels on the CPU run inside
  :func:`minidann.fast.tuning.tuned`.
- Logging: the step's losses stay device arrays; every ``log_every`` steps (and at evaluations, checkpoints and
  the end) the window's values are copied to the host once and averaged into one metrics row.
- NaN guard: at that same copy, every step of the window is checked. A NaN or inf stops training with
  :class:`TrainingDiverged`, naming the exact step, its lambda and lr, and the last good checkpoint. Checking
  once per window instead of once per step keeps the GPU from waiting on the host every step; the price is up
  to ``log_every - 1`` wasted steps after a divergence, and checkpoints are only ever written after a check.
- Checkpoints every ``checkpoint_every`` steps and at the end (atomic, see :mod:`minidann.checkpoint`).
- Stop signals (Ctrl-C's SIGINT, SIGTERM from a scheduler, ``docker stop`` or ``timeout``, SIGHUP from a closed
  terminal; see :mod:`minidann.stop_signals`): the first sets a flag; the loop finishes the current step, saves
  a checkpoint at that step boundary and raises :class:`TrainingInterrupted`, whose ``exit_status`` is 128 + the
  signal number. Stopping between steps (never inside the optimizer's update) is what lets ``--resume`` end
  with the same weights as an uninterrupted run. A second signal raises KeyboardInterrupt at once, without
  saving.
- A checkpoint that cannot be written raises :class:`~minidann.io_errors.WriteFailed` naming the cause, the fix
  and the last good checkpoint (which the failed write leaves intact).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dispatch
from .backend import get_array_module, synchronize, to_device, to_numpy
from .batches import DomainBatches, DomainData, EpochSampler
from .checkpoint import Checkpoint, save_checkpoint, unsaveable_meta
from .dann import DANN, MODES, batch_rows, lambda_schedule, lr_schedule, train_step
from .fast.batch_copy import batch_to_device
from .fast.parallel import check_threads
from .fast.tuning import tuned
from .io_errors import WriteFailed
from .optim import SGD
from .progress import PlainLines, progress_style
from .stop_signals import StopRequest, signal_exit_status

__all__ = ["DomainData", "EpochSampler", "Trainer", "TrainingDiverged", "TrainingInterrupted", "METRIC_COLUMNS"]

#: Columns of metrics.csv, in order. Losses and domain accuracy are means over the steps since the previous row;
#: lambda and lr are the values of the row's last step (lambda only in dann mode, the only one with a GRL);
#: source_acc and target_acc are filled at evaluations. Empty cells mean "not applicable / not measured".
METRIC_COLUMNS = ("step", "mode", "label_loss", "domain_loss", "domain_acc", "lambda", "lr", "source_acc",
                  "target_acc")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the mode, step, lambda, lr and the last good checkpoint."""


class TrainingInterrupted(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) stopped training at a step boundary after saving a checkpoint.

    Attributes:
        mode: the mode being trained.
        step: steps completed.
        checkpoint: where the checkpoint was saved (None when it could not be saved).
        signum: the signal that asked for the stop (SIGINT for Ctrl-C).
        exit_status: 128 + signum, as a shell reports a program stopped by that signal (130, 143, 129).
    """

    def __init__(self, message: str, mode: str, step: int, checkpoint: Path | None,
                 signum: int = signal.SIGINT):
        super().__init__(message)
        self.mode, self.step, self.checkpoint = mode, step, checkpoint
        self.signum, self.exit_status = int(signum), signal_exit_status(signum)


@dataclass
class _Window:
    """The statistics of the steps since the last metrics row.

    ``values`` holds, per step, (label_loss, domain_loss, domain_acc) as device 0-d arrays (None where the mode
    has no domain loss); ``host`` holds the rows restored from a checkpoint, already on the host.
    """

    steps: list[int] = field(default_factory=list)
    values: list = field(default_factory=list)
    host: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


#: What every checkpoint's meta holds already: extra meta must not use these keys.
_CHECKPOINT_KEYS = ("mode", "step", "num_steps", "progress", "lambd", "lr", "train_seconds", "eval_seconds",
                    "last_eval", "kernels", "format_version", "rng_state")


def _check_checkpoint_path(path: Path) -> None:
    """A checkpoint path must be a file whose folder can exist: checked before training, not at the first save."""
    if path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a folder; give a file name, e.g. {path / 'dann.npz'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"checkpoint_path {path}: {parent} is a file, so the checkpoint cannot be saved "
                                 "there; choose another path")
            break


def _check_meta(meta: dict) -> None:
    """Extra checkpoint meta must be JSON and must not reuse the checkpoint's own keys: checked before training."""
    taken = sorted(set(meta) & set(_CHECKPOINT_KEYS))
    if taken:
        raise ValueError(f"meta keys {taken} are written by every checkpoint already; rename them")
    bad = unsaveable_meta(meta)
    if bad:
        raise ValueError(f"meta[{bad[0]!r}] cannot be saved in a checkpoint (not JSON): use plain numbers, strings, "
                         "lists and dicts (e.g. float(x), int(x), str(path), array.tolist())")


class Trainer:
    """Trains one mode of the MNIST -> MNIST-M experiment.

    Args:
        model: the :class:`~minidann.dann.DANN` network on its device.
        optimizer: SGD over the model's parameters.
        data: training sets of both domains; the labels the mode reads must lie in [0, model.num_classes) (checked
            here, on the host: the loop copies them to the device with the images, and the loss trusts them there).
        mode: "source" (64 source images, label loss), "dann" (half source with label loss, half target, domain
            loss on all through the GRL) or "target" (64 labelled target images).
        num_steps: total steps of this mode; p = steps_done / num_steps.
        batch_size: images per step (``dann``: batch_size // 2 source + the rest target).
        rng: the host generator; the samplers draw from it after the model's weights were drawn.
        log_every: steps per metrics row (and per NaN check).
        eval_every: steps between evaluations (0: only at the end).
        evaluate: ``evaluate(model) -> {"source_acc": float, "target_acc": float}``, called at evaluations.
        checkpoint_path: where to save checkpoints (None: never).
        checkpoint_every: steps between checkpoints (0: only at the end and on Ctrl-C).
        meta: extra JSON-serialisable values for every checkpoint (the run's configuration).
        on_row: called with each metrics row (a dict keyed by :data:`METRIC_COLUMNS`).
        progress: show progress on stderr: a tqdm bar on a terminal or in a notebook, else one plain line per
            evaluation (:mod:`minidann.progress`).
        threads: with the fast kernels on the CPU, 2 runs the two halves of every batch at once on two cores, 1
            one after the other; the same result bit for bit (see :func:`minidann.dann.train_step`). The reference
            kernels take 1 (checked by :func:`minidann.fast.parallel.check_threads`).
        kernels: "fast" or "reference", the layer of ops that trains (None: the active one when the Trainer is
            made); :meth:`run` trains under it whatever is active at the call.
        nan_at_step: testing aid: fill the batch of this step (1-based) with NaN, to exercise the guard.
        interrupt_at_step: testing aid: send this process ``interrupt_signal`` after this step.
        interrupt_signal: the signal ``interrupt_at_step`` sends (default SIGINT, as Ctrl-C would).
    """

    def __init__(self, model: DANN, optimizer: SGD, data: DomainData, mode: str, num_steps: int, batch_size: int,
                 rng: np.random.Generator, *, log_every: int = 50, eval_every: int = 0,
                 evaluate: Callable[[DANN], dict] | None = None, checkpoint_path: str | Path | None = None,
                 checkpoint_every: int = 0, meta: dict | None = None, on_row: Callable[[dict], None] | None = None,
                 progress: bool = True, nan_at_step: int | None = None, interrupt_at_step: int | None = None,
                 threads: int = 1, kernels: str | None = None, interrupt_signal: int = signal.SIGINT):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        ints = {"num_steps": num_steps, "batch_size": batch_size, "log_every": log_every, "eval_every": eval_every,
                "checkpoint_every": checkpoint_every}
        for name, v in ints.items():
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name} must be an integer, got {v!r}")
        if num_steps < 1 or log_every < 1 or batch_size < 1:
            raise ValueError(f"num_steps, log_every and batch_size must be positive, got {num_steps}, {log_every} "
                             f"and {batch_size}")
        if eval_every < 0 or checkpoint_every < 0:
            raise ValueError(f"eval_every and checkpoint_every must be >= 0 (0: only at the end), got {eval_every} "
                             f"and {checkpoint_every}")
        if mode == "dann" and batch_size < 2:
            raise ValueError("dann mode needs a batch of at least 2 (one source and one target image)")
        if checkpoint_path is not None:
            _check_checkpoint_path(Path(checkpoint_path))
        meta = dict(meta or {})
        _check_meta(meta)
        self.kernels = dispatch.active_kernels() if kernels is None else dispatch.check_kernels(kernels)
        check_threads(threads, model.device, self.kernels, batch_rows(batch_size, mode))
        self.model, self.optimizer, self.data, self.mode = model, optimizer, data, mode
        self.num_steps, self.batch_size, self.rng = num_steps, batch_size, rng
        self.log_every, self.eval_every, self.evaluate = log_every, eval_every, evaluate
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_every, self.meta, self.on_row = checkpoint_every, meta, on_row
        self.progress, self.nan_at_step, self.interrupt_at_step = progress, nan_at_step, interrupt_at_step
        self.threads, self.interrupt_signal = threads, interrupt_signal
        self.device = model.device

        # (checks the data, and the range of the labels the step will copy to the device unchecked)
        self.batches = DomainBatches(data, mode, batch_size, rng, num_classes=model.num_classes)
        # the pixel mean on the device, once (the batches are preprocessed there, see _one_step)
        self._mean_on_device = to_device(data.mean.astype(np.float32), "gpu") if self.device == "gpu" else None
        self.samplers: dict[str, EpochSampler] = self.batches.samplers

        self.step = 0  # steps completed
        self.train_seconds = 0.0  # time in the loop, without evaluations, summed over resumed sessions
        self.eval_seconds = 0.0
        self.last_checkpoint: tuple[Path, int] | None = None
        self.last_eval: dict | None = None
        self._window = _Window()
        self._stop = StopRequest()  # replaced by the active one while run() runs

    # -- schedules -------------------------------------------------------------------------------------------

    def schedule(self, step: int) -> tuple[float, float, float]:
        """(p, lambda_p, mu_p) used by the 1-based step ``step``: p = (step - 1) / num_steps, as in tf-dann."""
        p = (step - 1) / self.num_steps
        return p, lambda_schedule(p), lr_schedule(p)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The loop's own state (samplers and the unlogged window) as host arrays."""
        state = self.batches.state_dict()
        state["window.steps"] = np.asarray(self._window.steps, np.int64)
        state["window.values"] = self._window_host().reshape(-1, 3)
        return state

    def save(self, **extra) -> Path | None:
        """Save a checkpoint of the current step boundary (if a path was given); return its path."""
        if self.checkpoint_path is None:
            return None
        p = self.step / self.num_steps
        try:
            path = save_checkpoint(
                self.checkpoint_path, self.model, self.optimizer, self.rng, self.state_dict(),
                mode=self.mode, step=self.step, num_steps=self.num_steps, progress=p, lambd=lambda_schedule(p),
                lr=lr_schedule(p), train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
                last_eval=self.last_eval, kernels=self.kernels, **self.meta, **extra,
            )
        except FloatingPointError as e:
            raise TrainingDiverged(f"{e}; {self._last_good()}") from e
        except WriteFailed as e:  # the old file is intact (atomic write): say where the run can go on from
            failed = WriteFailed(f"{e} Training of {self.mode!r} stopped after step {self.step}; "
                                 f"{self._last_good()}.", e.path, e.errno)
            failed.last_checkpoint = self.last_checkpoint
            raise failed from e
        self.last_checkpoint = (path, self.step)
        return path

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt``: weights, momentum, RNG, samplers, step and the unlogged window."""
        if ckpt.meta["mode"] != self.mode or ckpt.meta["num_steps"] != self.num_steps:
            raise ValueError(f"checkpoint {ckpt.path} is for mode {ckpt.meta['mode']!r} with "
                             f"{ckpt.meta['num_steps']} steps, not {self.mode!r} with {self.num_steps}")
        theirs = ckpt.meta.get("kernels", "fast")  # (checkpoints without the key were all trained fast)
        if theirs != self.kernels:
            raise ValueError(f"checkpoint {ckpt.path} was trained with the {theirs} kernels, this Trainer runs the "
                             f"{self.kernels} kernels: resume it with kernels={theirs!r} (--kernels {theirs}), so that "
                             "the run ends as it would have without the interruption")
        # checked before anything is changed: no half-restored trainer
        self.batches.check_state(ckpt.state, f"checkpoint {ckpt.path}")
        ckpt.restore(self.model, self.optimizer, self.rng)
        self.batches.load_state_dict(ckpt.state)
        self.step = int(ckpt.meta["step"])
        self.train_seconds = float(ckpt.meta.get("train_seconds", 0.0))
        self.eval_seconds = float(ckpt.meta.get("eval_seconds", 0.0))
        self.last_eval = ckpt.meta.get("last_eval")
        steps, values = ckpt.state["window.steps"], ckpt.state["window.values"]
        self._window = _Window([int(s) for s in steps], [], np.asarray(values, np.float64).reshape(-1, 3))
        self.last_checkpoint = (ckpt.path, self.step)

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was saved before it"
        path, step = self.last_checkpoint
        return f"last good checkpoint: {path} (step {step})"

    # -- logging and the NaN guard ---------------------------------------------------------------------------

    def _window_host(self) -> np.ndarray:
        """The window's statistics on the host, (steps, 3) float64 with NaN where a mode has no domain loss.

        This is the one place the loop copies from the device: one copy per window, not per step.
        """
        rows = self._window.values
        if not rows:
            return self._window.host
        xp = get_array_module(rows[0][0])
        cols = [xp.stack([r[c] for r in rows]).astype(xp.float64) if rows[0][c] is not None
                else xp.full(len(rows), np.nan) for c in range(3)]
        return np.concatenate([self._window.host, to_numpy(xp.stack(cols, axis=1))])

    def _flush(self, evaluated: dict | None) -> dict:
        """Check the window for NaN/inf, then turn it into one metrics row and start a new window."""
        values = self._window_host()
        has_domain = self.mode == "dann"
        losses = values[:, :2] if has_domain else values[:, :1]
        bad = ~np.isfinite(losses).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            step = self._window.steps[k]
            _, lambd, lr = self.schedule(step)
            label_loss, domain_loss = values[k, 0], values[k, 1]
            what = f"label loss {label_loss:.6g}" + (f", domain loss {domain_loss:.6g}" if has_domain else "")
            raise TrainingDiverged(
                f"non-finite loss in mode {self.mode!r} at step {step} of {self.num_steps} ({what}; "
                f"lambda {lambd:.6g}, lr {lr:.6g}). Training stopped; {self._last_good()}. Losses are checked "
                f"every {self.log_every} steps (log_every). Fix: check that the batches are preprocessed float32 "
                f"images (minidann.dann.preprocess) and any backward you changed (python -m minidann.gradcheck); "
                f"then resume from the last good checkpoint."
            )
        mean = values.mean(axis=0) if len(values) else np.full(3, np.nan)
        _, lambd, lr = self.schedule(self.step)
        row = {
            "step": self.step, "mode": self.mode, "label_loss": float(mean[0]),
            "domain_loss": float(mean[1]) if has_domain else None,
            "domain_acc": float(mean[2]) if has_domain else None,
            "lambda": lambd if has_domain else None, "lr": lr,  # no GRL outside dann mode
            "source_acc": None if evaluated is None else evaluated["source_acc"],
            "target_acc": None if evaluated is None else evaluated["target_acc"],
        }
        self._window = _Window()
        if self.on_row is not None:
            self.on_row(row)
        return row

    def _postfix(self, row: dict) -> dict:
        post = {"L_y": f"{row['label_loss']:.3f}"}
        if row["domain_loss"] is not None:
            post.update(L_d=f"{row['domain_loss']:.3f}", d_acc=f"{row['domain_acc']:.2f}")
        if row["lambda"] is not None:
            post["lambd"] = f"{row['lambda']:.3f}"
        post["lr"] = f"{row['lr']:.5f}"
        return post

    # -- the loop --------------------------------------------------------------------------------------------

    def _stop_message(self, name: str) -> str:
        what = "Ctrl-C" if name == "SIGINT" else name
        return (f"\n{what}: stopping {self.mode} after step {self.step + 1} and saving a checkpoint (send it again "
                "to quit without saving)")

    def run(self) -> dict:
        """Train from ``self.step`` to ``num_steps``; return the last metrics row.

        Raises:
            TrainingDiverged: a loss became NaN or inf.
            TrainingInterrupted: Ctrl-C, SIGTERM or SIGHUP; a checkpoint was saved at the last completed step.
            WriteFailed: a checkpoint could not be written; the last good one is named and intact.
        """
        from tqdm.auto import tqdm

        row = None
        with contextlib.ExitStack() as stack:
            stack.enter_context(dispatch.kernels(self.kernels))
            if self.device == "cpu" and self.kernels == "fast":
                stack.enter_context(tuned())  # malloc keeps the step's freed memory for the next step, meanwhile
            self._stop = stack.enter_context(StopRequest(self._stop_message))  # (main thread only)
            style = progress_style(self.progress)  # a bar on a terminal or in a notebook, else plain lines
            self._lines = PlainLines(self.mode, self.num_steps, self.step) if style == "lines" else None
            bar = stack.enter_context(tqdm(
                total=self.num_steps, initial=self.step, desc=f"{self.mode} ({self.kernels} kernels)", file=sys.stderr,
                unit="step", disable=None if style == "bar" else True, dynamic_ncols=True))
            self._start_clock()
            while self.step < self.num_steps:
                row = self._one_step(bar) or row
        self._update_clock()
        if self._stop.requested:  # a signal during the last step: the final checkpoint is saved, but stop the run
            path = None if self.checkpoint_path is None else self.last_checkpoint[0]
            where = f"checkpoint saved to {path}" if path is not None else "no checkpoint path was set"
            raise TrainingInterrupted(f"{self._stop.name}: interrupted at the end of mode {self.mode!r} (step "
                                      f"{self.step}); {where}", self.mode, self.step, path, self._stop.signum)
        return row

    def _one_step(self, bar) -> dict | None:
        """Train step ``self.step + 1``, then log, evaluate and checkpoint as due; the metrics row if one was made."""
        if self._stop.requested:
            raise self._interrupt()
        step = self.step + 1
        _, lambd, lr = self.schedule(step)
        # the batch (labels checked in range with the data); on a GPU its pixels and labels in one copy, then
        # preprocessed there (minidann.fast.batch_copy)
        if self.device == "gpu":
            x, y = batch_to_device(*self.batches.next_pixels(), self._mean_on_device)
        else:
            x, y = self.batches.next()
        if step == self.nan_at_step:
            x[...] = np.nan
        stats = train_step(self.model, self.optimizer, x, y, self.mode, lambd, lr, threads=self.threads)
        self.step = step
        self._window.steps.append(step)
        self._window.values.append((stats.label_loss, stats.domain_loss, stats.domain_acc))
        bar.update(1)
        if step == self.interrupt_at_step:
            signal.raise_signal(self.interrupt_signal)

        evaluate_now = self.evaluate is not None and (
            step == self.num_steps or (self.eval_every and step % self.eval_every == 0))
        checkpoint_now = step == self.num_steps or (self.checkpoint_every and step % self.checkpoint_every == 0)
        if not (evaluate_now or checkpoint_now or step % self.log_every == 0):
            return None
        evaluated = None
        if evaluate_now:
            self._check_window()  # no point evaluating a diverged model
            synchronize()
            t_eval = time.perf_counter()
            evaluated = self.last_eval = dict(self.evaluate(self.model))
            self.eval_seconds += time.perf_counter() - t_eval
        row = self._flush(evaluated)
        bar.set_postfix(self._postfix(row), refresh=False)
        if self._lines is not None:
            self._lines(row)  # one line per evaluation where no bar shows
        if checkpoint_now:
            self._update_clock()
            self.save()
        return row

    def _check_window(self) -> None:
        """Run the NaN check on the window without ending it."""
        values = self._window_host()
        if not np.isfinite(values[:, :2 if self.mode == "dann" else 1]).all():
            self._flush(None)  # raises TrainingDiverged with the exact step

    def _start_clock(self) -> None:
        self._clock = (time.perf_counter(), self.train_seconds, self.eval_seconds)

    def _update_clock(self) -> None:
        """train_seconds = time in the loop since run() began, minus evaluations, plus earlier sessions'."""
        synchronize()  # queued GPU work belongs to the steps that queued it
        t0, train0, eval0 = self._clock
        self.train_seconds = train0 + (time.perf_counter() - t0) - (self.eval_seconds - eval0)

    def _interrupt(self) -> TrainingInterrupted:
        """Save at the current step boundary and build the exception the caller reports."""
        self._check_window()
        self._update_clock()
        path = self.save()
        where = f"checkpoint saved to {path}" if path is not None else "no checkpoint path was set, nothing saved"
        return TrainingInterrupted(f"{self._stop.name}: interrupted in mode {self.mode!r} after step {self.step} of "
                                   f"{self.num_steps}; {where}", self.mode, self.step, path, self._stop.signum)
