"""What the benchmark scripts share: one-line errors for a user's mistakes.

A script ends with ``run(main)``: a ``UserError`` (a missing ``--model`` path, a checkpoint
of the wrong kind, a bad value) prints ``NAME: error: MESSAGE`` and exits 2, as argparse
does for a bad flag, instead of a traceback; Ctrl-C is ``NAME: interrupted`` and exit 130.
``positive_int`` and ``non_negative_int`` (the CLI's own check,
``unmask.commands.at_least(1)`` and ``at_least(0)``) and ``positive_float`` are argparse
types for counts and durations; ``int_list`` parses a comma list such as
``--clients 1,4,16``, ``non_negative_floats`` one such as ``--scales 0,0.02``; ``json_text``
writes strict JSON (NaN as null).
``output_file`` / ``output_path`` are the type of a ``--json`` path (checked at once, nothing
made: an unwritable path is refused before the run, not after it); ``write_results`` writes
the file (strict JSON, atomically, its folder made then; through a symlink, and in place
where the path is no regular file: ``/dev/null``).
``require_hybrid(loaded, flag)`` refuses a checkpoint not trained with ``--objective hybrid``.
``generated(ids, eos)`` is the one count of a row's tokens behind every script's tokens/s.
``round_robin(calls, repeats)`` times rows that are compared side by side: the median of
repeats taken in cycles over the rows, in the balanced orders of ``balanced_orders(n)``
(wall time; ``cpu_clock`` for the process's CPU seconds).
``child_json(cmd, what)`` runs a script's child process and returns the JSON object it
prints last, or says in one line why there is none (killed by a signal, its own error).
``default_output(name)`` is where results go when no path is given (``runs/bench``, not the
committed ``benchmarks/results``). Scripts import this module from their own folder
(``python benchmarks/NAME.py`` puts it first on ``sys.path``). It imports ``unmask`` only
when a flag is parsed or an error is raised or caught, so a script may still choose where
``unmask`` comes from after importing it (startup.py puts ``src/`` first).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

__all__ = ["OUTPUT", "balanced_orders", "child_json", "cpu_clock", "default_output",
           "fill_defaults", "int_list",
           "json_text", "generated", "non_negative_floats", "non_negative_int", "output_file",
           "output_path", "positive_float", "positive_int", "require_hybrid", "round_robin",
           "run", "write_results"]  # fmt: skip

OUTPUT = Path(__file__).resolve().parents[1] / "runs" / "bench"
"""Where a script writes its results when no path is given (``runs/`` is ignored by git)."""


def default_output(name: str) -> Path:
    """``runs/bench/NAME`` of the checkout: a script's results file when no ``--json`` (or
    ``--out``) is given. Never ``benchmarks/results``, whose files are the committed
    measurements the docs cite: running a documented command again must not overwrite them.
    To update one on purpose, name it: ``--json benchmarks/results/NAME``."""
    return OUTPUT / name


def generated(ids: Sequence[int], eos: int | None, *, with_eos: bool = False) -> int:
    """Tokens a row generated, as every script's tokens/s counts them (and so its ratio to
    ``ar``): its text, cut at its first EOS, the EOS not counted; a row that ended at EOS
    early counts its own length, not the batch's longest row's (``generate_ar``'s ``steps``).
    ``with_eos``: the EOS that ended the row counted too, for tokens per *forward* (a forward
    made the EOS; after it, a left-to-right decoder makes nothing and a diffusion row no
    text)."""
    from unmask.sampling import cut_at_eos

    text = len(cut_at_eos(ids, eos))
    return text + (with_eos and text < len(ids))


T = TypeVar("T")


def _clock(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def cpu_clock(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the CPU seconds of this process it took (``round_robin``'s ``clock`` for
    rows compared on a machine shared with other work)."""
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def balanced_orders(n: int) -> list[list[int]]:
    """The cycles of ``round_robin``: orders of rows ``0..n-1`` (a Williams design, a
    balanced Latin square), ``n`` of them for an even ``n``, ``2n`` for an odd one. Over
    them each row comes first equally often and, within a cycle, right after each other
    row equally often (once for an even ``n``, twice for an odd one). Each order is
    followed by its reverse, so the last row of one cycle is the first of the next (a row
    after itself); the next pair starts one row lower, which keeps the first three cycles
    from putting a row after the same other row twice (five rows or more)."""
    zigzag = [0][:n]
    low, high = 1, n - 1
    while len(zigzag) < n:  # 0, 1, n-1, 2, n-2, ...: each difference once
        zigzag.append(low)
        low += 1
        if len(zigzag) < n:
            zigzag.append(high)
            high -= 1
    orders: list[list[int]] = []
    for r in range(n if n % 2 else n // 2):  # an even n's reverses are the other translates
        order = [(i - r) % n for i in zigzag]
        orders += [order, order[::-1]]
    return orders


def round_robin(
    calls: Sequence[Callable[[], T]], repeats: int,
    timer: Callable[[Callable[[], T]], tuple[T, float]] = _clock,
) -> list[tuple[T, float]]:
    """(last result, median seconds) of each of ``calls``, each called ``repeats`` times
    (at least once; ``timer(fn)`` -> (result, seconds), default the wall clock around it).
    Each cycle of the repeats calls every row once, so a machine whose speed drifts
    (shared cores) slows every row alike, in the orders of ``balanced_orders``: over ``n``
    cycles of ``n`` rows (``2n`` for an odd ``n``) each row goes first equally often and
    comes right after each other row equally often, so a row that slows whatever runs next
    slows no other row in most of its repeats: with five rows or more, not in two of the
    first three (with three or four rows, some row still follows it in half of a long run).
    Timing each row's repeats back to back, two rows of the same decoding read 0.85x and
    1.25x AR in one run on a shared CPU; in a fixed order, a row right after the widest
    hybrid row read 0.60x where it reads 0.87x elsewhere (benchmarks/speculative.py); one
    pass per row moved benchmarks/hybrid.py's ratios by 0.3x between runs. Warm the calls up
    before: the first call of each pays one-time costs."""
    n = len(calls)
    times: list[list[float]] = [[] for _ in calls]
    last: list[Any] = [None] * n
    orders = balanced_orders(n) or [[]]
    for r in range(max(repeats, 1)):
        for i in orders[r % len(orders)]:
            last[i], t = timer(calls[i])
            times[i].append(t)
    return [(out, statistics.median(t)) for out, t in zip(last, times, strict=True)]


def json_text(
    obj: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None
) -> str:
    """``obj`` as strict JSON text (and a newline): a NaN or infinite float (a rate with
    nothing measured, the gen ppl of texts with no token) becomes ``null``, where
    ``json.dumps`` writes ``NaN``, which is not JSON (``jq`` and JavaScript refuse the file).
    ``default`` is ``json.dumps``'s: what an object JSON has no form for is written as."""
    import json

    from unmask.files import finite_or_null

    return json.dumps(finite_or_null(obj), indent=indent, allow_nan=False, default=default) + "\n"


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (the CLI's ``unmask.commands.at_least``,
    imported when a flag is parsed, after a script chose where ``unmask`` comes from)."""
    from unmask.commands import at_least

    return at_least(1)(text)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0 (``--threads 0``: torch's default), the
    CLI's ``unmask.commands.at_least(0)``."""
    from unmask.commands import at_least

    return at_least(0)(text)


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be positive")
    return value


def non_negative_floats(what: str) -> Callable[[str], list[float]]:
    """argparse type of a comma list of finite numbers >= 0 (``--temperatures 0,0.5,1``,
    ``--scales 0,0.02``): a bad item is refused as the flag is parsed, in one line naming
    ``what`` one item is, where ``float()`` raised a traceback after minutes of training."""

    def parse(text: str) -> list[float]:
        import math

        try:
            values = [float(t) for t in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}"
            ) from None
        bad = [v for v in values if not (v >= 0 and math.isfinite(v))]  # NaN too
        if bad:
            raise argparse.ArgumentTypeError(f"{what} is a finite number >= 0, got {bad[0]:g}")
        return values

    return parse


def output_file(text: str) -> str:
    """argparse type of a results path (``--json``): a path that cannot be written (under a
    file, in a folder where no file can be made, an empty name, a folder) is refused in one
    line before anything is measured, where it was an error after the whole run. Nothing is
    made: the check creates (and removes) a temporary file in the nearest folder of the path
    that exists, so a refused command leaves no folder behind; the script makes the missing
    folders when it writes its results. A path that is there but no regular file
    (``/dev/null``, a FIFO) needs only to be writable: it is written in place."""
    import os

    path = Path(text)  # os.path's tests: False, not an error, for a path that cannot be seen
    if not text.strip() or os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"expected a file to write, got {text!r}")
    from unmask.files import write_target

    path, in_place = write_target(path)  # a symlink's target, replaced in its own folder
    if in_place:  # /dev/null, a FIFO: opened as it is, no file made beside it
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text}: Permission denied")
        return text
    parents = (path.parent, *path.parent.parents)
    folder = next(p for p in parents if os.path.exists(p) or p == p.parent)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text}: Not a directory: {folder}")
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}."):
            pass
        if os.path.exists(path):  # opened to append, left as it is: a read-only file too
            with path.open("a"):
                pass
    except OSError as e:
        where = "" if os.path.exists(path) else f" (no file can be made in {folder})"
        raise argparse.ArgumentTypeError(f"cannot write {text}: {e.strerror or e}{where}") from None
    return text


def write_results(path: str | Path, data: Any, *, indent: int | None = 1) -> None:
    """``data`` as strict JSON (``json_text``) at ``path`` (an ``output_file``), whole or not at
    all (a full disk, Ctrl-C: ``unmask.files.atomic_write_text``, which writes through a
    symlink and in place to ``/dev/null``, ``/dev/stdout`` or a FIFO), its folder made now."""
    from unmask.files import atomic_write_text, write_target

    text = json_text(data, indent=indent)
    write_target(Path(path))[0].parent.mkdir(parents=True, exist_ok=True)  # a link's target's
    atomic_write_text(Path(path), text)


def output_path(text: str) -> Path:
    """``output_file`` as a ``Path``."""
    return Path(output_file(text))


def int_list(text: str, flag: str) -> list[int]:
    """``"1,4,16"`` as ``[1, 4, 16]``; a ``UserError`` naming ``flag`` unless every item is a
    positive integer."""
    from unmask.errors import UserError

    try:
        return [positive_int(x.strip()) for x in text.split(",")]
    except argparse.ArgumentTypeError as e:
        raise UserError(f"{flag} {text}: {e} (a comma list of positive integers)") from None


def require_hybrid(loaded: Any, flag: str) -> None:
    """A ``UserError`` naming ``flag`` (``--model PATH``) unless ``loaded`` (an
    ``unmask.checkpoint.Loaded``) was trained with ``--objective hybrid`` (its config has a
    ``draft_block``): checked as the checkpoint is loaded, before anything is timed."""
    from unmask.errors import UserError

    if not loaded.config.draft_block:
        raise UserError(f"{flag}: not a hybrid checkpoint (its config has no draft_block; "
                        "train one with --objective hybrid)")


def run(main: Callable[[], object], *, interrupted: str = "") -> NoReturn:
    """``sys.exit(main())``, with a ``UserError`` (or an ``OSError``: a path that cannot be
    read or written) as one line on stderr and exit status 2, and Ctrl-C as ``NAME:
    interrupted`` (and the interrupt's ``note``, e.g. what ``main`` kept, then the
    ``interrupted`` argument: what to do next) and status 130, as
    ``unmask`` says them (a run of minutes stopped by Ctrl-C printed a traceback of wherever
    it was), with further signals held while it says so; a training run that saved on
    SIGTERM (``TrainingStopped``) exits with its ``exit_code`` and says ``terminated``; where
    stdout's reader left (``| head``, ``--help | head``; stdout is flushed before ``run``
    returns, a buffered output too), 141 and nothing said (``unmask.cli.reader_left``). A
    ``main`` that returns no exit status (``None``, or its rows) exits 0."""
    from unmask.cli import flush
    from unmask.errors import UserError

    try:
        try:
            code = main()
        except SystemExit:  # argparse's --help (or an error): its text may still be buffered
            flush(sys.stdout)  # a closed pipe shows here, in the handlers below
            raise
        flush(sys.stdout)  # `| head`: a buffered output reaches the closed pipe here, inside
        # the handlers below, not at the interpreter's last flush ("Exception ignored", 120)
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # `python benchmarks/NAME.py | head`: the reader left, no error
        # of the script's (it said "error: Broken pipe", status 2), as unmask ends
        from unmask.cli import reader_left

        code = reader_left()
    except OSError as e:  # a --json under a file, a folder with no write permission, a
        # full disk: what the system said, in one line, as the CLI does
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"{Path(sys.argv[0]).name}: error: {e.strerror or e}{where}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt as e:
        from unmask.cli import EXIT_INTERRUPTED, hold_signals, stopped_how

        hold_signals()  # the process is ending: a second Ctrl-C cannot break the line
        code = getattr(e, "exit_code", EXIT_INTERRUPTED)  # 128 + the signal, as a shell says
        said = (getattr(e, "note", ""), interrupted)  # what main kept, what to do next
        hint = "".join(f"; {x}" for x in said if x)
        print(f"{Path(sys.argv[0]).name}: {stopped_how(code)}{hint}", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b|: error: ")
"""A line of a child's stderr that is its error: a traceback's last line (``RuntimeError:
boom``, ``torch.OutOfMemoryError: ...``) or a script's own (``llada2.py: error: ...``)."""

TORCHRUN_SUMMARY = re.compile(r"^torch\.distributed\.elastic\.[\w.]*ChildFailedError\b")
"""The line that starts torchrun's own report of its failed workers (``...ChildFailedError:``
with nothing after it, then a table of each worker's ``exitcode``)."""

TORCHRUN_LOG = re.compile(r"^[DIWEF]\d{4} [\d:.]+ \d+ \S+:\d+\] ")
"""A log line of torchrun itself (``E1207 12:16:32.023 30793 torch/.../api.py:1002] failed
(exitcode: 2) ...``), not of a worker."""

EXITCODE = re.compile(r"^exitcode\s*:\s*(-?\d{1,9})\b")


def _child_failure(stderr: str, status: int) -> str:
    """Why a child process that exited with ``status`` failed, in one line, from its
    ``stderr``: killed by a signal says so (``killed by signal 9 (out of memory?)``), whatever
    warnings came before; else the last line that is an error (``ERROR_LINE``), else the last
    line, else the exit status. A torchrun child's stderr ends in torchrun's traceback and
    report (``ChildFailedError``): its workers' own lines come before it, and a worker that
    torchrun saw first failing by a signal (``exitcode  : -9``) was killed. (Its last error
    line was torchrun's ``...ChildFailedError:``, which says nothing.)"""
    said = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    codes: list[int] = []
    cut = next((i for i, ln in enumerate(said) if TORCHRUN_SUMMARY.match(ln)), None)
    if cut is not None:  # torchrun's: the worker codes, the first failure's last
        codes = [int(m[1]) for ln in said[cut:] if (m := EXITCODE.match(ln))]
        tb = [i for i, ln in enumerate(said[:cut]) if ln.startswith("Traceback (most recent")]
        said = [ln for ln in said[:tb[-1] if tb else cut] if not TORCHRUN_LOG.match(ln)]
    sig = -status if status < 0 else -codes[-1] if codes and codes[-1] < 0 else 0
    if sig:
        who = "a worker was killed" if status >= 0 else "killed"
        return f"{who} by signal {sig}" + (" (out of memory?)" if sig == 9 else "")
    errors = [ln for ln in said if ERROR_LINE.search(ln)]
    last = f"a worker's exit status {codes[-1]}" if codes else f"exit status {status}"
    return (errors or said or [last])[-1]


def child_json(cmd: list[str], what: str, *,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` (a child process of a script, with ``env`` if given) and return the JSON
    object it prints last on stdout. A child that fails is one ``UserError`` line naming
    ``what`` and saying why (``_child_failure``: killed by a signal, or its own error, torchrun's
    workers' included); one whose last line of stdout is not a JSON object quotes that line.
    (A child's failure was a ``CalledProcessError`` or ``JSONDecodeError`` traceback that
    hid what the child said.)"""
    import subprocess

    from unmask.errors import UserError

    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        why = _child_failure(res.stderr or "", res.returncode)
    else:
        lines = (res.stdout or "").strip().splitlines()
        try:
            out = json.loads(lines[-1]) if lines else None
        except ValueError:
            out = None
        if isinstance(out, dict):
            return out
        why = (f"its last line of output is not a JSON object: {lines[-1][:200]!r}" if lines
               else "it printed nothing")
    raise UserError(f"the {what} child process failed: {why}")


def fill_defaults(args: Any, normal: dict[str, Any], quick: dict[str, Any]) -> None:
    """Give every option in ``normal`` that the user left unset (``None``) its default:
    ``quick``'s value under ``--quick`` (where it has one), else ``normal``'s. ``--quick``
    thus picks small defaults and never overrides a flag the user gave."""
    for key, value in normal.items():
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, value) if getattr(args, "quick", False) else value)
