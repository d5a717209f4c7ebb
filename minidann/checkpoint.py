"""Checkpoints: one ``.npz`` that holds everything a run needs to continue exactly where it stopped.

Contents (all plain arrays; ``np.load(..., allow_pickle=False)`` reads them):

- ``param/<name>``: every parameter, by its dotted name (``feature_extractor.0.W``, ...);
- ``velocity/<i>``: SGD's momentum buffers, in parameter order;
- ``state/<key>``: the training loop's own arrays (the epoch samplers' permutations and positions, ...);
- ``meta``: a JSON string with the step, the schedule position p, the host RNG state
  (``rng.bit_generator.state``), the mode and the run's configuration.

A checkpoint is written to a temporary file in the same folder, flushed, fsynced and ``os.replace``d over
the old one, so a crash or a Ctrl-C while saving leaves either the old checkpoint or the new one, never half.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .data._common import save_npz_atomic
from .layers import Module
from .optim import SGD

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint, on the host.

    Attributes:
        params: parameter name -> array.
        optimizer: SGD state dict (``velocity.<i>`` -> array).
        state: the training loop's extra arrays.
        meta: step, progress, rng_state, mode, config and whatever else the writer put in.
        path: where it was read from.
    """

    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict
    path: Path

    def restore(self, model: Module, optimizer: SGD | None = None, rng: np.random.Generator | None = None) -> None:
        """Load the weights into ``model`` (onto its device), the momentum into ``optimizer``, the state into
        ``rng``."""
        model.load_state_dict(self.params)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
        if rng is not None:
            rng.bit_generator.state = self.meta["rng_state"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a minidann checkpoint; the message names the file."""


def save_checkpoint(path: str | os.PathLike, model: Module, optimizer: SGD | None = None,
                    rng: np.random.Generator | None = None, state: dict[str, np.ndarray] | None = None,
                    **meta) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: destination, normally ``<out>/checkpoints/<mode>.npz``.
        model: its parameters are saved (host copies).
        optimizer: its momentum buffers are saved.
        rng: its ``bit_generator.state`` is saved as JSON, so the batches after a resume are the same.
        state: extra host arrays of the training loop.
        **meta: JSON-serialisable values (step, progress, mode, config, ...).

    Raises:
        FloatingPointError: a parameter holds NaN or inf (a checkpoint must be a good state to go back to).
    """
    path = Path(path)
    params = model.state_dict()
    bad = [name for name, a in params.items() if not np.isfinite(a).all()]
    if bad:
        raise FloatingPointError(f"not saving checkpoint {path}: parameters {bad} hold NaN or inf")
    arrays = {f"param/{k}": v for k, v in params.items()}
    if optimizer is not None:
        arrays.update({f"velocity/{k.split('.', 1)[1]}": v for k, v in optimizer.state_dict().items()})
    for k, v in (state or {}).items():
        arrays[f"state/{k}"] = to_numpy(v)  # (host copies of device arrays: np.asarray refuses CuPy's)
    meta = {"format_version": FORMAT_VERSION, **meta}
    if rng is not None:
        meta["rng_state"] = rng.bit_generator.state
    bad = unsaveable_meta(meta)
    if bad:
        raise TypeError(f"checkpoint meta {bad} cannot be saved (not JSON): use plain numbers, strings, lists and "
                        "dicts (e.g. float(x), int(x), str(path), array.tolist())")
    arrays["meta"] = np.array(json.dumps(meta))  # a 0-d unicode array: no pickle needed
    for k, v in arrays.items():
        if v.dtype == object:  # np.load(allow_pickle=False) would refuse the whole checkpoint later
            raise TypeError(f"checkpoint array {k!r} has dtype object (it would need pickling): give a numeric array")

    # temp file in the same folder, fsync, os.replace: readers see the old checkpoint or the whole new one
    return save_npz_atomic(path, arrays)


def unsaveable_meta(meta: dict) -> list[str]:
    """The keys of ``meta`` whose values a checkpoint cannot hold (its meta is JSON: numbers, strings, lists, dicts)."""
    bad = []
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            bad.append(key)
    return bad


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickling anything).

    Raises:
        CheckpointError: the path is missing or a folder, the file is not an ``.npz``, or its ``meta`` entry is
            missing or damaged.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint: give one file, such as "
                              f"{path / 'checkpoints' / 'dann.npz'} or {path / 'dann.npz'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (a run keeps its checkpoints in "
                              "<run>/checkpoints/<mode>.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a truncated or foreign file
        # (NumPy's own message for a file that is not an .npz suggests allow_pickle=True: not for a checkpoint,
        # which never holds pickles, so only the kind of error is kept)
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}): it is truncated or not a "
                              "minidann checkpoint") from e
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a minidann checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as e:
        raise CheckpointError(f"{path} is damaged: its 'meta' entry is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is damaged: its 'meta' entry is not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format_version')}, "
                              f"this minidann reads format {FORMAT_VERSION}")

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    optimizer = {f"velocity.{k}": v for k, v in group("velocity/").items()}
    return Checkpoint(group("param/"), optimizer, group("state/"), meta, path)
