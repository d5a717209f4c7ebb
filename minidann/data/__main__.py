"""The data command: `python -m minidann.data {info,download,build-mnistm,grid} [options]`.

  info          where the data folder is and what is in it
  download      fetch MNIST and BSDS500 into the data folder (prints how to do it by hand when offline)
  build-mnistm  build MNIST-M and cache it in the data folder
  grid          save a PNG grid of MNIST digits above their MNIST-M versions

Bad flags exit with status 2, data errors with status 1, each with a short message on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import (
    DataError,
    data_dir_origin,
    download_all,
    load_digits_pair,
    load_embedded,
)
from .backgrounds import BSDS500_FILE
from .embedded import embedded_path
from .mnist import MNIST_FILES, find_mnist_file, load_mnist, missing_mnist_files


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=None,
        help="data folder (default: None, i.e. $MINIDANN_DATA, else $XDG_CACHE_HOME/minidann, else ~/.cache/minidann)",
    )
    common.add_argument(
        "--source", choices=("auto", "embedded", "full"), default="auto",
        help="MNIST source: full files, the embedded subset, or auto (default: %(default)s)",
    )
    common.add_argument(
        "--no-verify", action="store_true",
        help="accept any well-formed IDX files / BSDS500 archive without checking checksums (default: verify)",
    )
    common.add_argument("--seed", type=int, default=0, help="MNIST-M seed (default: %(default)s)")
    common.add_argument(
        "--no-download", action="store_true", help="never touch the network (default: downloads allowed)"
    )
    common.add_argument(
        "--out", default="mnist_mnistm_grid.png", help="PNG written by `grid` (default: %(default)s)"
    )
    # The options belong to each command (`info --data-dir D`): argparse would let a subcommand's defaults
    # overwrite the same options given before the command.
    parser = argparse.ArgumentParser(prog="python -m minidann.data", description="MNIST / MNIST-M data for minidann.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,download,build-mnistm,grid}")
    sub.add_parser("info", parents=[common], help="show the data folder and what is in it")
    sub.add_parser("download", parents=[common], help="download MNIST and BSDS500 into the data folder")
    sub.add_parser("build-mnistm", parents=[common], help="build MNIST-M and cache it in the data folder")
    sub.add_parser("grid", parents=[common], help="save a PNG grid of MNIST next to MNIST-M")
    return parser


def _info(args: argparse.Namespace) -> None:
    root, origin = data_dir_origin(args.data_dir)
    state = "" if root.is_dir() else " - a file, not a folder!" if root.exists() else " - does not exist yet"
    print(f"data folder: {root} (from {origin}){state}")
    print("MNIST:")
    for img, lbl in MNIST_FILES.values():
        for name in (img, lbl):
            path = find_mnist_file(root, name)
            print(f"  {name:<26} {f'{path.name} ({path.stat().st_size:,} bytes)' if path else 'missing'}")
    if not missing_mnist_files(root):
        try:
            train, test = load_mnist(root, verify=not args.no_verify)
            state = "official checksums verified" if not args.no_verify else "well-formed (not verified)"
            print(f"  -> {len(train):,} train / {len(test):,} test, {state}")
        except DataError as e:
            print(f"  -> NOT usable: {e}")
    tgz = root / BSDS500_FILE
    print(f"BSDS500: {f'{tgz} ({tgz.stat().st_size:,} bytes)' if tgz.is_file() else 'missing'}")
    caches = sorted(root.glob("mnistm-*.npz")) if root.is_dir() else []
    print(f"MNIST-M caches: {len(caches)}")
    for path in caches:
        try:
            with np.load(path, allow_pickle=False) as npz:
                desc = f"{npz['label']}, seed {int(npz['seed'])}, {len(npz['train_positions']):,} train / " \
                       f"{len(npz['test_positions']):,} test"
        except Exception as e:  # a damaged cache is only reported; it is rebuilt when needed
            desc = f"unreadable ({e})"
        print(f"  {path.name}: {desc}")
    train, test = load_embedded()
    print(f"embedded subset: {embedded_path()} ({len(train):,} train / {len(test):,} test, sha256 verified)")


def _download(args: argparse.Namespace) -> None:
    root, origin = data_dir_origin(args.data_dir)
    print(f"data folder: {root} (from {origin})")
    if args.no_download:
        raise DataError("`download` with --no-download does nothing; drop --no-download")
    paths = download_all(root)
    print("\n".join(f"downloaded {p}" for p in paths) if paths else "nothing to download: all files present")


def _build(args: argparse.Namespace) -> None:
    pair = load_digits_pair(args.source, args.data_dir, not args.no_verify, args.seed, not args.no_download)
    root = data_dir_origin(args.data_dir)[0]
    print(pair.description)
    print(f"why: {pair.reason}")
    where = f"cached in {pair.mnistm_cache}" if pair.mnistm_cache else f"not cached (could not write to {root})"
    print(f"MNIST-M: {len(pair.mnistm_train):,} train / {len(pair.mnistm_test):,} test, {where}")


def _grid(args: argparse.Namespace) -> None:
    from matplotlib.figure import Figure  # Figure API: no pyplot global state

    from ..viz import save_png

    out = Path(args.out)  # a .png name (checked in main, before the data are built)
    pair = load_digits_pair(args.source, args.data_dir, not args.no_verify, args.seed, not args.no_download)
    # Two examples of each digit: row pairs show an MNIST digit above the MNIST-M image built from it.
    picks = [np.flatnonzero(pair.mnist_train.labels == d)[:2] for d in range(10)]
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(4, 10)
    for d, idx in enumerate(picks):
        for k, i in enumerate(idx):
            axes[2 * k, d].imshow(pair.mnist_train.images[i], cmap="gray", vmin=0, vmax=255)
            axes[2 * k + 1, d].imshow(pair.mnistm_train.images[i])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, name in enumerate(("MNIST", "MNIST-M", "MNIST", "MNIST-M")):
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(pair.description, fontsize=8)
    save_png(fig, out, dpi=100)  # written whole, then renamed: an interrupted run leaves no half PNG
    print(f"wrote {out}: {pair.description}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.command == "grid" and (Path(args.out).suffix.lower() != ".png" or Path(args.out).is_dir()):
        parser.error(f"grid: --out {args.out} must name a .png file, e.g. --out mnist_mnistm_grid.png")
    commands = {"info": _info, "download": _download, "build-mnistm": _build, "grid": _grid}
    try:
        commands[args.command](args)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
