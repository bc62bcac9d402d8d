"""``python -m unmask.tasks NAME --out DIR``: write a task's training corpus and eval set.

Then ``unmask prepare DIR/train.txt --line-docs --tokenizer byte -o DATA``, ``unmask train``
and ``unmask eval RUN --task-file DIR/eval.jsonl`` (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from unmask.commands import at_least
from unmask.errors import UserError
from unmask.tasks import TASKS, write_task


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the task's files, print its ``task.json``; exit code 2 and one
    line on a user error, 130 and one line on Ctrl-C (the folder's files as they were:
    ``write_task`` writes all or none), 141 and nothing said where stdout's reader left."""
    p = argparse.ArgumentParser(
        prog="python -m unmask.tasks",
        description="Write a planning or reversal task: DIR/train.txt (one example per line, "
        "for `unmask prepare --line-docs`), DIR/sft.jsonl (the same examples as prompt/response "
        "pairs, for `unmask train --objective sft`), DIR/eval.jsonl (held-out items for "
        "`unmask eval --task-file`) and DIR/task.json.",
    )
    p.add_argument(
        "task", metavar="TASK", help="; ".join(f"{k}: {t.summary}" for k, t in TASKS.items())
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to write into")
    p.add_argument(
        "--train",
        type=at_least(0),
        default=10000,
        metavar="N",
        help="training examples (reversal: pairs seen both ways; past 1225 pairs in all, "
        "the names get a third syllable); the held-out items are drawn after them, so a "
        "larger N with the same seed trains on a smaller N's held-out items (default: 10000)",
    )
    p.add_argument(
        "--eval",
        type=at_least(1),
        default=200,
        metavar="N",
        help="held-out examples (reversal: pairs seen forward only) (default: 200)",
    )
    p.add_argument(  # Random(-s) is Random(s): a negative seed wrote the files of its opposite
        "--seed", type=at_least(0), default=0, help="generator seed, 0 or more (default: 0)"
    )
    p.add_argument(
        "--no-progress", action="store_true",
        help="hide the progress of the sudoku generators (sudoku9's default size takes about "
        "5 minutes of one core)",
    )
    args = p.parse_args(argv)
    if not args.out.strip():  # Path("") is ".": the files landed in the working folder
        p.error("argument --out: expected a folder, got an empty name")
    try:
        record = write_task(
            args.task, args.out, n_train=args.train, n_eval=args.eval, seed=args.seed,
            progress=not args.no_progress,
        )
    except UserError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where the folder goes, no permission, a full disk
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"{p.prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # was a traceback from inside the sudoku solver
        from unmask.cli import EXIT_INTERRUPTED, hold_signals, stopped_how

        hold_signals()  # exiting: a second Ctrl-C cannot break the line
        code = getattr(e, "exit_code", EXIT_INTERRUPTED)
        print(f"{p.prog}: {stopped_how(code)}; {args.out} left as it was", file=sys.stderr)
        return code
    try:
        print(json.dumps(record), flush=True)
    except BrokenPipeError:  # `python -m unmask.tasks ... | head -c 0`: the reader left (the
        # files are written); a traceback before
        from unmask.cli import reader_left

        return reader_left()
    return 0


if __name__ == "__main__":
    sys.exit(main())
