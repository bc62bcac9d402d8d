"""The ``unmask`` command: dispatches to ``unmask.commands.<name>``.

Everything every command shares happens here, once:

- Only the command being run is imported (``unmask --help`` and argument errors import no
  torch), so they answer at once.
- ``--threads`` (every command that runs a model): torch's CPU threads, default
  ``commands.command_threads``; ``OMP_WAIT_POLICY=PASSIVE`` is set before torch loads
  unless the user set it, so idle OpenMP threads sleep instead of spinning (about 2x faster
  on a shared machine).
- A misspelt command or flag is one line naming the nearest (``unknown_command``,
  ``unknown_flags``: ``--gen-lenght; did you mean --gen-length?``), found before argparse
  checks anything else.
- Exit codes: 0 done, 2 a user mistake (``UserError``: one line on stderr, no traceback;
  also argparse's errors), 130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM, as
  a shell reports a process killed by it), 129 hung up (SIGHUP). Each signal prints one
  line, no traceback: torch is imported with the signals held (``_import_torch_whole``),
  and a process ending by a signal blocks further ones (``hold_signals``).
  141 when the reader of stdout left (``unmask ... | head``), silently.
- Under ``torchrun`` every process parses the same command line and meets the same
  mistakes: rank 0 alone says a user mistake or a signal, in one line (``_said_by_rank_0``;
  ``unmask.parallel.said_once`` for the library's refusals).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

from unmask import __version__
from unmask.commands import COMMANDS, command_threads, using_threads
from unmask.errors import UserError
from unmask.names import closest

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_HUNG_UP = 129  # 128 + SIGHUP: the terminal or ssh session closed


def stopped_how(exit_code: int) -> str:
    """How a run stopped by a signal says so, by its exit status: ``interrupted`` (130,
    Ctrl-C), ``terminated`` (143, SIGTERM), ``hung up (SIGHUP)`` (129); the one wording of
    ``unmask`` and the benchmark scripts (``benchmarks/_common.run``)."""
    return {EXIT_TERMINATED: "terminated", EXIT_HUNG_UP: "hung up (SIGHUP)"}.get(
        exit_code, "interrupted")

EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: the reader of stdout left

EPILOG = (
    "Run 'unmask COMMAND --help' (or 'unmask help COMMAND') for a command's options. Exit "
    "status: 0 done, 2 a usage error or bad input, 130 interrupted (Ctrl-C), 143 terminated "
    "(SIGTERM), 129 hung up (SIGHUP), 141 output pipe closed. Docs: README.md and docs/."
)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (or SIGHUP: the terminal or ssh session closed),
    so ``finally`` blocks run and ``main`` exits 128 + the signal (143, 129).

    A ``BaseException`` like ``KeyboardInterrupt`` but not one: code that treats Ctrl-C as
    "stop this reply" (``unmask chat``) must not swallow a request to terminate.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


_TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_STOPPING = frozenset({signal.SIGINT, *_TERMINATING})
"""The signals held while torch imports and while the process exits."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Terminated`` inside the block (main thread only; the old
    handlers come back after). A command that saves on the signal (``train``) installs its
    own handler and, once saved, re-raises the signal so it ends here too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_terminated) for sig in _TERMINATING}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _import_torch_whole() -> None:
    """Import torch with SIGINT/SIGTERM/SIGHUP held back: a signal that lands inside its C
    extension's import (numpy's module init) was swallowed (the run went on and exited 0),
    became an ``ImportError`` traceback, or aborted the process (SIGABRT). A signal that
    came meanwhile is delivered when the mask is lifted, as the usual one line."""
    if "torch" in sys.modules or threading.current_thread() is not threading.main_thread():
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        import torch  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Parser(argparse.ArgumentParser):
    """argparse's parser with one-line errors: the command, what is wrong, where the help is
    (argparse prints the whole usage block first, 20 lines for ``generate``)."""

    _argv: list[str] | None = None

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # for ``_dash_text``
        return super().parse_known_args(args, namespace)

    # A reader of --help or --version that left (`unmask --help | true`) is main's quiet 141,
    # as for any command's output: a short text, still in stdout's buffer at exit, was
    # Python's "Exception ignored ... BrokenPipeError" and status 120; a longer one met the
    # closed pipe inside argparse, which drops the error: status 0, the text cut short.

    def _print_message(self, message: str, file: Any = None) -> None:
        if message and file is not None and file is sys.stdout:
            file.write(message)
            return
        super()._print_message(message, file)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        flush(sys.stdout)
        super().exit(status, message)

    def error(self, message: str) -> NoReturn:
        _said_by_rank_0()
        flag = _VALUE_MISSING.match(message)
        text = None if flag is None else self._dash_text(flag[1])
        if text is not None:  # `--prompt -x` met this, argparse taking the text for a flag
            message += f" (a text that begins with '-' is written {flag[1]}={text})"
        model = self._model_as_word(message)
        if model is not None:  # `unmask generate runs/mine "hi"`, as `unmask eval runs/mine`
            message += f" (a model is given as --model {model})"
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")

    def _model_as_word(self, message: str) -> str | None:
        """The word typed where ``--model`` was missing that names a model (a folder holding
        a config.json, or a run's ``checkpoint`` one; a shipped model's name, as
        ``--model`` takes it: ``commands.model_choice``): the user took ``--model`` for a
        positional argument, as ``unmask eval RUN`` takes it. Only positional words are
        looked at (``--draft DIR`` or ``--prompt demo`` is no model typed without
        ``--model``). None else."""
        if not (message.startswith("the following arguments are required:")
                and "--model" in message):
            return None
        from pathlib import Path
        from shlex import quote

        from unmask.commands import model_choice
        from unmask.names import SHIPPED_MODELS

        for word in _positional_words(self._option_string_actions, self._argv or []):
            try:  # a prompt is no path: too long a name is an OSError, not False
                model = model_choice(word)
                if (model in SHIPPED_MODELS and not os.path.lexists(model)) or any(
                        (Path(model) / sub / "config.json").is_file()
                        for sub in ("", "checkpoint")):
                    return quote(word)
            except (OSError, ValueError, argparse.ArgumentTypeError):
                continue  # no model, or one --model refuses (a dataset, Demo with ./demo)
        return None

    def _dash_text(self, flag: str) -> str | None:
        """The word beginning with ``-`` that followed ``flag`` and that it takes as its
        text (its ``type`` accepts it: ``--prompt -x``, ``--template -x``; not ``--gen-length
        -x``): argparse read that word as a flag. None where no word followed (``--out``
        last: the value is missing, as argparse says)."""
        action = self._option_string_actions.get(flag)
        argv = self._argv or []
        if action is None:
            return None
        for i, word in enumerate(argv[:-1]):  # a flag may be abbreviated (--prom)
            if not (word in action.option_strings
                    or (word.startswith("--") and len(word) > 2 and flag.startswith(word))):
                continue
            text = argv[i + 1]
            if not text.startswith("-") or text.split("=")[0] in self._option_string_actions:
                continue  # a value, or a flag of this command: the value is missing
            if callable(action.type):
                try:
                    action.type(text)
                except (argparse.ArgumentTypeError, TypeError, ValueError, UserError):
                    continue  # not a value of this flag: a flag, as argparse read it
            return text
        return None


_VALUE_MISSING = re.compile(r"argument (?:-\w/)?(--[\w-]+)(?:/[^:]*)?: expected one argument$")
"""argparse's refusal of a flag given no value, which is also what a value beginning with
``-`` (and no space) meets (``--prompt -x``, ``--system -v``): argparse reads it as a flag."""


def _torchrun_rank() -> tuple[int, int]:
    """This process's rank and the number of processes (``torchrun``'s ``RANK`` and
    ``WORLD_SIZE``; 0 of 1 outside it)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def _follower() -> bool:
    """Whether this is a worker of ``torchrun`` that leaves its lines to another
    (``unmask.parallel.holds_back``: not rank 0, nor the first worker of its machine)."""
    rank, world = _torchrun_rank()
    if world <= 1 or rank == 0:
        return False  # the common case imports nothing
    from unmask.parallel import holds_back

    return holds_back(rank, world)


def _said_by_rank_0(error: BaseException | None = None) -> None:
    """Before a user mistake is printed: under ``torchrun`` every process met it (the same
    command line, the same files), so a process other than rank 0 holds its line back until
    torchrun ends it, as soon as rank 0 has said it and exited, and then exits quietly with
    status 2; a mistake only this process meets is said after that wait
    (``unmask.parallel.hold_back_for_rank_0``; an ``error`` that ``unmask.train``'s
    ``said_once`` held back already is said at once). Outside torchrun, and on rank 0,
    returns at once (torch is not imported)."""
    if not _follower():
        return
    from unmask.parallel import hold_back_for_rank_0

    rank, world = _torchrun_rank()
    hold_back_for_rank_0(error, rank=rank, world=world)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``unmask`` parser. Only the modules of ``commands`` (module names, default all)
    are imported and register their flags; the others appear in the list by name and
    summary, which is all ``unmask --help`` shows."""
    wanted = set(COMMANDS if commands is None else commands)
    parser = _Parser(
        prog="unmask",
        description="Train, run and infill with masked diffusion language models. New here? "
                    "'unmask demo' shows the shipped demo model (no network, no arguments).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"unmask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, summary in COMMANDS.items():
        if name in wanted:
            try:
                module = importlib.import_module(f"unmask.commands.{name}")
            except ModuleNotFoundError as e:  # a command not written yet
                if e.name != f"unmask.commands.{name}":
                    raise
            else:
                module.register(sub)
                continue
        sub.add_parser(name.replace("_", "-"), help=summary, add_help=False)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The module name of the command in ``argv`` (its first word), or None."""
    if not argv or argv[0].startswith("-"):
        return None
    name = argv[0].replace("-", "_")
    return name if name in COMMANDS else None


def _say_starting(label: str, note: str | None) -> None:
    """``label: note`` on stderr before torch is imported, where a command asks for it
    (``starting_note``: ``unmask demo``, whose first run showed nothing for the seconds the
    import takes) and stderr is a terminal (a pipe or a log gets no such line)."""
    if note is None or "torch" in sys.modules or _follower():
        return
    from unmask.terminal import is_terminal

    if is_terminal(sys.stderr):
        print(f"{label}: {note}", file=sys.stderr, flush=True)


def _limit_threads_before_torch(n: int) -> None:
    """Before torch is first imported, its OpenMP pool can still be sized by the
    environment; this reaches threads torch starts later too (the server's worker)."""
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(n)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status.

    As the program (``argv`` None), a run that ends by a signal ignores further ones: a
    second Ctrl-C would otherwise land in the interpreter's shutdown (threading's, torch's
    atexit hooks) and print a traceback after the one line."""
    with _stderr_present():
        status = _main(argv, program=argv is None)
    if argv is None and status in (EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_HUNG_UP):
        hold_signals()
    return status


@contextlib.contextmanager
def _stderr_present() -> Iterator[None]:
    """Inside, ``sys.stderr`` is a stream: where the process started with it closed (``2>&-``)
    Python sets it to None, and ``print(..., file=sys.stderr)`` then writes to stdout: the
    summary, notes and errors landed in the text of ``unmask generate ... > out.txt``. They
    go to the null device instead (the user closed where they would be read)."""
    if sys.stderr is not None:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink:
        sys.stderr = sink
        try:
            yield
        finally:
            sys.stderr = None  # type: ignore[assignment]


def flush(*streams: Any) -> None:
    """Flush each of ``streams`` (``sys.stdout``, ``sys.stderr``) that is there: Python sets
    one to None where the process started with it closed (``unmask ... >&-``), and
    ``None.flush()`` was an AttributeError, a traceback after the run."""
    for stream in streams:
        if stream is not None:
            stream.flush()


def reader_left() -> int:
    """What a process says where stdout's reader left (``unmask ... | head``; a
    ``BrokenPipeError``): nothing, stdout pointed at ``os.devnull`` so that the interpreter's
    last flush is quiet too, and ``EXIT_PIPE_CLOSED`` to exit with, as a shell reports a
    command killed by a closed pipe. ``unmask``, ``python -m unmask.tasks`` and the
    benchmark scripts (``_common.run``) end so."""
    with contextlib.suppress(OSError, AttributeError, ValueError):  # stdout None or closed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_PIPE_CLOSED


def hold_signals() -> None:
    """Block SIGINT/SIGTERM/SIGHUP for the rest of the process (it is exiting): one C call,
    so a second signal cannot interrupt the exit path between bytecodes."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)


def _main(argv: Sequence[str] | None, *, program: bool = False) -> int:
    # Idle OpenMP threads sleep instead of spinning; must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"]:  # `unmask help [COMMAND]`, as git and pip
        topic = argv[1:]
        if len(topic) > 1 or (topic and topic[0].startswith("-") and topic[0] not in (
                "-h", "--help")):  # `help generate extra`, `help --version`
            _said_by_rank_0()
            print(f"unmask help: error: help takes one command, got {' '.join(topic)!r} "
                  f"(see: unmask --help)", file=sys.stderr)
            return EXIT_USER_ERROR
        argv = [*(t for t in topic if t not in ("help", "-h", "--help")), "--help"]
    name = command_of(argv)
    label = f"unmask {argv[0]}" if name else "unmask"
    bad = next((a for a in argv if not _is_utf8(a)), None)
    if bad is not None:  # bytes the locale could not decode arrive as surrogate escapes
        shown = bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        _said_by_rank_0()
        print(f"{label}: error: argument {shown[:60]!r} is not UTF-8 text", file=sys.stderr)
        return EXIT_USER_ERROR
    with contextlib.suppress(AttributeError, ValueError):  # stdin as text read: UTF-8, strict
        sys.stdin.reconfigure(encoding="utf-8", errors="strict")  # type: ignore[union-attr]
    # stdout in an encoding that cannot hold every character (PYTHONIOENCODING=latin-1, a
    # cp1252 file on Windows): the text is written with \u201c for what it cannot hold, as
    # Python writes stderr, instead of a UnicodeEncodeError traceback after the whole run
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    if argv and not argv[0].startswith("-") and (name is None or "_" in argv[0]):
        _said_by_rank_0()
        print(f"unmask: error: {unknown_command(argv[0])} (see: unmask --help)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    parser: argparse.ArgumentParser | None = None  # named in a refusal: the flags typed
    try:
        with _sigterm_raises():
            parser = build_parser([name] if name else [])
            command = _command_parser(parser, argv[0]) if name else None
            unknown = unknown_flags(command, argv[1:]) if command is not None else []
            if unknown:  # before argparse, whose "--model is required" hid "--modle"
                _said_by_rank_0()
                meant = [m for _, m in unknown if m]
                hint = f"; did you mean {' and '.join(meant)}?" if meant else ""
                hint += _model_flag_hint(command, [w for w, _ in unknown], argv[1:])
                print(f"{label}: error: unrecognized arguments: "
                      f"{' '.join(w for w, _ in unknown)}{hint} (see: {label} --help)",
                      file=sys.stderr)
                return EXIT_USER_ERROR
            args, extra = parser.parse_known_args(argv)
            if extra:  # named by the command whose flags they are not (argparse: "unmask")
                _said_by_rank_0()
                print(f"{label}: error: unrecognized arguments: {' '.join(extra)} "
                      f"(see: {label} --help)", file=sys.stderr)
                return EXIT_USER_ERROR
            if not getattr(args, "func", None):
                _said_by_rank_0()
                parser.print_help()
                flush(sys.stdout)  # a closed pipe: the handler below, not 120 at shutdown
                return EXIT_USER_ERROR
            threads = contextlib.nullcontext()
            if hasattr(args, "threads"):  # a command that runs a model
                n = command_threads(args)
                _limit_threads_before_torch(n)
                threads = using_threads(n)
            if getattr(args, "check_flags", None):  # a command's torch-free refusals first
                args.check_flags(args)
            _say_starting(label, getattr(args, "starting_note", None))
            _import_torch_whole()  # every command imports it; a signal meanwhile is one line
            with threads:
                status = int(args.func(args) or 0)
            flush(sys.stdout)  # a closed pipe shows here, inside the handlers below
            return status
    except UserError as e:
        _said_by_rank_0(e)
        print(f"{label}: error: {as_typed(str(e), argv, parser)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UnicodeDecodeError as e:  # text a user gave (stdin, a file) that is not UTF-8
        _said_by_rank_0()
        print(f"{label}: error: input is not UTF-8 text ({e.reason} at byte {e.start})",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `unmask ... | head`: the reader left; not an error of ours
        return reader_left()
    except OSError as e:  # a path that cannot be made or written (a file where a folder
        # goes, no permission, a full disk): what the system said, in one line
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        _said_by_rank_0()
        print(f"{label}: error: {e.strerror or e}{where}", file=sys.stderr)
        try:  # stdout's own write failed (`--help > /dev/full`): what its buffer holds would
            flush(sys.stdout)  # fail again at exit, Python's "Exception ignored" block, 120
        except OSError:
            reader_left()  # (it said so in the line above): its buffer dropped
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if program:
            hold_signals()  # first: a second Ctrl-C must not interrupt this line
        if not _follower():  # torchrun: every process got it; rank 0 says it
            print(f"{label}: {stopped_how(EXIT_INTERRUPTED)}", file=sys.stderr)
        _exit_if_abandoned(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Terminated as e:
        if program:
            hold_signals()
        code = EXIT_HUNG_UP if e.signum == signal.SIGHUP else EXIT_TERMINATED
        if not _follower():  # torchrun stops the others when one ends (rank 0 said why), or
            print(f"{label}: {stopped_how(code)}", file=sys.stderr)  # all got it: rank 0 says
        _exit_if_abandoned(code)
        return code


ABANDONING = ("unmask.tokenizer", "unmask.commands.serve")
"""The modules whose ``ABANDONED`` flag says a run stopped by a signal left a thread running
that the interpreter's shutdown must not wait for: BPE training in native code (it would
abort on it), ``unmask serve``'s slow check of a client gone (it waited for it, signals
held, for as long as the check ran: ``commands.serve``)."""


def _exit_if_abandoned(code: int) -> None:
    """Exit now with ``code`` (``os._exit``, after flushing) where a thread was left running
    (``ABANDONING``)."""
    if any(getattr(sys.modules.get(m), "ABANDONED", False) for m in ABANDONING):
        with contextlib.suppress(OSError, ValueError):
            flush(sys.stdout, sys.stderr)
        os._exit(code)


def _model_flag_hint(command: argparse.ArgumentParser, unknown: Sequence[str],
                     words: Sequence[str]) -> str:
    """Where ``--model`` is among the ``unknown`` flags of ``command`` that takes its model
    otherwise (``unmask eval RUN``, ``convert SRC DST``, ``distill --teacher``: its
    ``set_defaults`` key ``model_given_as``, with ``{model}`` for the path): how it takes
    it, with the path typed after ``--model`` in ``words`` (else ``PATH``). Every other
    command that runs a model takes ``--model``, so the habit is typed here too;
    "unrecognized arguments: --model" alone said not where the model goes."""
    given_as = command.get_default("model_given_as")
    if given_as is None or "--model" not in unknown:
        return ""
    model = ""
    for i, word in enumerate(words):
        if word.startswith("--model="):
            model = word.split("=", 1)[1] or model
        elif word == "--model" and i + 1 < len(words) and not words[i + 1].startswith("-"):
            model = words[i + 1]
    from shlex import quote

    return "; " + given_as.format(model=quote(model) if model else "PATH")


def unknown_command(word: str) -> str:
    """The refusal of ``word``, which names no command: the closest command (``Generate``,
    ``genrate``: generate; ``fill_form``: fill-form), else the list. argparse listed the
    twelve choices, quoted, and no nearest one."""
    names = [n.replace("_", "-") for n in COMMANDS]
    near = closest(word.replace("_", "-"), names)
    hint = f"; did you mean {near}?" if near else f" (the commands: {', '.join(names)})"
    return f"unknown command {word!r}{hint}"


def unknown_flags(
    command: argparse.ArgumentParser, words: Sequence[str]
) -> list[tuple[str, str | None]]:
    """The long flags in ``words`` (up to a bare ``--``) that ``command`` has not, not even
    as a prefix argparse would take, each with the closest flag it has, or None
    (``--gen-lenght``: ``--gen-length``). A word with a space is a value, as argparse takes
    it (``--system "--be brief"``), unless an ``=`` precedes the space (``--sytem=be
    brief`` is a misspelt flag with its value), and the word after a flag that takes a
    value is that value (``--prompt "--x=1 y"``, which was refused as ``--x``). Nearness
    leaves the ``--`` out (``unmask.names.closest``): ``--port`` is no typo of ``--prompt``.
    A word with one dash that is a long flag with two (``-n``, ``-model``) is named too:
    argparse said only "unrecognized arguments: -n"."""
    options = command._option_string_actions
    longs = [s for s in options if s.startswith("--")]
    found = []
    value_next = False  # the previous word is a flag whose value is this word
    for word in words:
        if word == "--":
            break
        if value_next:
            value_next = False
            continue
        value_next = _takes_value(options, word)
        flag = word.split("=", 1)[0]  # --flg=some value: the flag is what precedes the =
        if re.fullmatch(r"-[a-z][\w-]*", flag) and flag not in options and f"-{flag}" in longs:
            found.append((flag, f"-{flag}"))  # -n, -model: one dash short of --n, --model
            continue
        if not flag.startswith("--") or len(flag) <= 2 or " " in flag:
            continue
        if any(s.startswith(flag) for s in longs):  # itself, or a prefix argparse judges
            continue
        found.append((flag, closest(flag, longs, prefix="--")))
    return found


def _positional_words(options: dict[str, argparse.Action], words: Sequence[str]) -> Iterator[str]:
    """The words of ``words`` (a command's, after its name) that are no flag of ``options``
    nor the value of one (``_takes_value``), as ``unknown_flags`` skips them; every word
    after a bare ``--``."""
    value_next = False
    for i, word in enumerate(words):
        if word == "--":
            yield from words[i + 1:]
            return
        if value_next:
            value_next = False
        elif word.startswith("-"):
            value_next = _takes_value(options, word)
        else:
            yield word


def _takes_value(options: dict[str, argparse.Action], word: str) -> bool:
    """Whether ``word`` is a flag of ``options`` (itself, or the one long flag it is a prefix
    of, as argparse takes it) whose value is the next word: one that takes a value
    (``nargs`` not 0) and has none after an ``=`` in ``word``."""
    if not word.startswith("-") or "=" in word:
        return False
    action = options.get(word)
    if action is None and word.startswith("--"):
        matches = {options[s] for s in options if s.startswith(word)}
        action = matches.pop() if len(matches) == 1 else None
    return action is not None and action.nargs != 0


_FIELD_RULE = re.compile(
    r"([a-z][a-z0-9_]*(?:, [a-z][a-z0-9_]*)*)"
    r"(?= must | \([^)]*\) must | applies | do not apply | does not apply | is an option |=|"
    r"\s\S+: )")
"""A refusal that opens with a setting's field name (``draft_length must be >= 1, got 0``,
``predraft applies to ...``, ``steps does not apply to decoder 'ar'``, ``steps, threshold do
not apply ...``, ``block_size=3 must divide ...``, ``steps (7) must be a multiple ...``,
``draft_length 9: this hybrid checkpoint ...``, ``compile='cuda-graphs' needs ...``,
``threshold is an option of policy ...``): the library's checks word them so."""

_SNAKE = re.compile(
    r"(?<![\w./-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w/.-])(?!=\S* in Python\b)")
"""A field name with an underscore anywhere in a refusal (``top_k and top_p apply to ...``):
no word of prose, so it is named as its flag wherever that flag was typed (not inside a path
or another identifier, nor where the message spells the Python argument: ``pass
--val-fraction 0 (val_fraction=0 in Python)``)."""


_ADVICE = re.compile(
    r"\b(try|use|or) ([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?= (?:\(e\.g\. )?(?:[<>]=? )?\d)")
"""A field in a refusal's advice, followed by the value to give it (``try block_length 6 or 8
or gen_length 42 or 49``, ``use gen_length <= 250``, ``or segment_length (e.g. 128)``): what
to type, so it is named as the command's flag whether or not it was typed."""


def as_typed(
    message: str, argv: Sequence[str], parser: argparse.ArgumentParser | None = None
) -> str:
    """``message`` naming the flags the user typed where it names the fields they set
    (``--draft-length must be >= 1, got 0``): the library's checks name fields, the command
    line knows them as flags. A field that opens the message is named so (``steps must ...``),
    one with an underscore anywhere. Only a flag present in ``argv`` is named, so a value that
    came from elsewhere (a checkpoint's recommendation) keeps its field name. With the
    ``parser`` that read ``argv``, a flag typed abbreviated (argparse takes ``--draft-len``
    for ``--draft-length``) counts as typed too, and is named in full, and a field the
    message advises a value for (``try gen_length 42``) is named as the command's flag when
    it has one (``try --gen-length 42``)."""
    typed = typed_flags(argv, parser)
    command = _command_parser(parser, argv[0]) if parser is not None and argv else None
    if command is not None:
        def advised(m: re.Match[str]) -> str:
            name = "--" + m.group(2).replace("_", "-")
            return f"{m.group(1)} {name}" if name in command._option_string_actions else m[0]

        message = _ADVICE.sub(advised, message)

    def flag(field: str) -> str | None:
        name = "--" + field.replace("_", "-")
        return name if name in typed else None

    m = _FIELD_RULE.match(message)
    if m is not None:  # each field of the opening list by its flag, where typed
        names = m.group(1).split(", ")
        opening = ", ".join(flag(name) or name for name in names)
        message = opening + message[len(m.group(1)):]
    return _SNAKE.sub(lambda w: flag(w.group(0)) or w.group(0), message)


def typed_flags(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> set[str]:
    """The long flags in ``argv`` (a command and its arguments, up to a bare ``--``), as
    spelled in full: ``--block-size=3`` is ``--block-size``; with the ``parser`` that read
    ``argv``, an unambiguous prefix is the flag argparse took it for (``--draft-len``:
    ``--draft-length``). A prefix that is no flag of the command stays as typed."""
    words = list(argv[1:])
    if "--" in words:
        words = words[: words.index("--")]
    typed = [a.split("=", 1)[0] for a in words if a.startswith("--") and len(a) > 2]
    command = _command_parser(parser, argv[0]) if parser is not None and argv else None
    if command is None:
        return set(typed)
    longs = [s for s in command._option_string_actions if s.startswith("--")]
    return {_full_flag(command, longs, a) for a in typed}


def _command_parser(
    parser: argparse.ArgumentParser, name: str
) -> argparse.ArgumentParser | None:
    """The sub-parser of ``parser`` that reads command ``name`` (None: no such command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _full_flag(command: argparse.ArgumentParser, longs: list[str], typed: str) -> str:
    """``typed`` as the long flag of ``command`` it selects: itself when exact, else the one
    flag it is a prefix of, as argparse's ``allow_abbrev`` matches it (several flags of one
    option: the one spelled as its destination)."""
    if typed in longs or not command.allow_abbrev:
        return typed
    matches = [s for s in longs if s.startswith(typed)]
    actions = {id(command._option_string_actions[s]) for s in matches}
    if len(actions) != 1:  # no flag of this command, or ambiguous (argparse refused it)
        return typed
    dest = "--" + command._option_string_actions[matches[0]].dest.replace("_", "-")
    return dest if dest in matches else matches[0]


def _is_utf8(arg: str) -> bool:
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
