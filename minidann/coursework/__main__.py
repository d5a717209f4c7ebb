"""``python -m minidann.coursework``: make an assignment from the reference ops, and grade it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .assignment import make_assignment
from .grading import grade, score_table
from .tasks import TASKS


def main(argv: Sequence[str] | None = None) -> int:
    names = ", ".join(t.name for t in TASKS)
    parser = argparse.ArgumentParser(prog="python -m minidann.coursework",
                                     description="Backward passes of minidann's ops as an autograded assignment.")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-assignment", help="write the student copy into DIR",
                          description="Write the reference ops into DIR/ops with the chosen backward passes "
                                      "replaced by NotImplementedError, plus per-task tests and a README.")
    make.add_argument("dir", metavar="DIR", help="the folder to write (new or empty)")
    make.add_argument("--tasks", default=None, help=f"comma-separated task names (default: all: {names})")
    make.add_argument("--solutions", action="store_true",
                      help="keep the reference bodies (the teacher's key, which grades to full marks)")
    make.add_argument("--overwrite", action="store_true",
                      help="write into a folder that is not empty, replacing ops/ and the files this command writes")
    grade_p = sub.add_parser("grade", help="check every task in DIR and print the score table",
                             description="Grade DIR: exit status 0 when every task passes, 1 when one fails.")
    grade_p.add_argument("dir", metavar="DIR", nargs="?", default=".", help="the assignment folder (default: .)")
    grade_p.add_argument("--seed", type=int, default=0, help="seed of inputs and upstream gradients (default: 0)")
    sub.add_parser("list", help="list the tasks and their points")
    args = parser.parse_args(argv)

    if args.command == "list":
        for t in TASKS:
            print(f"{t.name:24s} {t.points} points  {t.what} (functions/{t.file})")
        return 0
    if args.command == "make-assignment":
        tasks = None if args.tasks is None else [n.strip() for n in args.tasks.split(",") if n.strip()]
        try:
            folder = make_assignment(args.dir, tasks, solutions=args.solutions, overwrite=args.overwrite)
        except (FileExistsError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote the assignment to {folder} ({'solutions' if args.solutions else 'stubs'}); "
              f"students run: cd {folder} && pytest")
        return 0
    try:
        results = grade(args.dir, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(score_table(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
