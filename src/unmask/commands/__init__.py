"""CLI subcommands, one module each, the flags they share and the flag generator.

Each module defines ``register(subparsers) -> None``, which adds its parser and sets
``func=run`` where ``run(args: argparse.Namespace) -> int`` returns the exit code.

Inside:

- ``COMMANDS``: subcommand name -> one-line summary (the top-level ``unmask --help`` shows
  these without importing any command module).
- The shared flags, each defined once: ``add_model_flag``, ``add_device_flag``,
  ``add_threads_flag``, ``add_seed_flag``, ``add_json_flag``, ``add_no_live_flag``,
  ``add_no_progress_flag``. Every command that has such a flag gets it from here, so a flag
  means the same on every command (tests/test_cli_help.py checks it).
- ``add_dataclass_flags`` / ``dataclass_from_args``: one ``--flag`` per field of a
  configuration dataclass, its docstring as help, so the CLI and the Python API never drift.
- ``registry_choice``: a flag whose values come from a registry, checked only when given,
  so ``--help`` and argument errors never import torch; ``name_or_path``: a built-in name
  or a path (``--template``, ``--tokenizer``); ``model_choice``: every flag that takes a
  model (the shipped one in any case). All take names in any case by one rule, ``any_case``.
  ``check_model_exists``: a ``--model`` that names nothing, refused before torch loads.
- ``help_text``: field docstrings as plain text (no reST markup).
- ``default_threads``, ``using_threads``: the CPU thread count every model-running command
  uses (``cli.main`` applies it).

Nothing here imports torch: this module is on the path of ``unmask --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

COMMANDS: dict[str, str] = {
    "prepare": "tokenize text / JSONL files into token shards for training",
    "train": "train a model on a prepared dataset",
    "distill": "distill a diffusion model on its own trajectories to decode in parallel",
    "eval": "report a run: held-out bound, bits per byte, generative perplexity, loss curve",
    "generate": "generate text from a checkpoint",
    "chat": "chat with a model in the terminal",
    "demo": "show the shipped demo model generating and filling blanks",
    "infill": "fill the gaps of a text template",
    "edit": "rewrite spans of a text",
    "fill_form": "fill a JSON template with typed holes",
    "convert": "convert a published checkpoint folder to a native one, or export one (--to)",
    "serve": "serve a checkpoint over HTTP (OpenAI-compatible API)",
}
"""Subcommands in the order ``unmask --help`` lists them (module name; ``_`` is ``-`` on the
command line)."""

T = TypeVar("T")

SHARED_FLAGS = (
    "--model", "--device", "--threads", "--seed", "--json", "--no-live", "--no-progress",
)
"""Flags with one definition here; a command never defines them itself."""

_SHARED_MARK = "unmask_shared"  # attribute set on the argparse action of a shared flag


def _mark(action: argparse.Action) -> argparse.Action:
    setattr(action, _SHARED_MARK, True)
    return action


def is_shared(action: argparse.Action) -> bool:
    """Whether ``action`` was made by one of the shared-flag functions of this module."""
    return bool(getattr(action, _SHARED_MARK, False))


# -- plain help text ---------------------------------------------------------------------

_LITERAL = re.compile(r"``(.+?)``")
_ROLE = re.compile(r":[a-z]+:`([^`]+)`")
_TICKS = re.compile(r"`([^`]+)`")


def help_text(doc: str) -> str:
    """``doc`` (a field docstring in reST) as plain help text: ````code```` and ```x```
    lose their backticks, roles (``:class:`X```) their role, whitespace is one space, "None =" reads
    "unset =", and the final period goes (argparse appends the default after it)."""
    doc = _LITERAL.sub(r"\1", doc)
    doc = _ROLE.sub(r"\1", doc)
    doc = _TICKS.sub(r"\1", doc)
    doc = " ".join(doc.split())
    doc = doc.replace("None = ", "unset = ")  # Python's None is "not given" on the command line
    return doc[:-1] if doc.endswith(".") and not doc.endswith("..") else doc


def own_default(help_: str, shown: str) -> str:
    """``help_`` with the sentences that state a default replaced by ``(default: shown)``: a
    field's docstring can state the Python or server default, which a command's own rule
    overrides (``--steps``: the docstring's "64 is the Python default" is the generation
    length on ``unmask generate``)."""
    kept = [s for s in help_.split(". ") if not re.search(r"\bdefault", s)]
    return f"{'. '.join(kept)} (default: {shown})"


def with_default(help_: str, default: Any) -> str:
    """``help_`` plus ``(default: X)`` when a default says something: not for None, empty
    values or False (an off switch), and not when the help already states it."""
    if default is None or default is False or default in ("", (), [], {}) or "(default" in help_:
        return help_
    shown = "on" if default is True else default
    return f"{help_} (default: {shown})"


# -- shared flags ------------------------------------------------------------------------

MODEL_HELP = (
    "run directory, checkpoint folder, publisher folder (docs/models.md), or demo: the shipped "
    "demo model"
)


def add_model_flag(
    parser: argparse.ArgumentParser | Any, *, required: bool = True, default_help: str = ""
) -> None:
    """``--model PATH``: the checkpoint a command runs. ``default_help`` says what an
    optional ``--model`` falls back to (e.g. the shipped demo model)."""
    help_ = MODEL_HELP + (f" (default: {default_help})" if default_help else "")
    _mark(parser.add_argument("--model", required=required, metavar="PATH", type=model_choice,
                              help=help_))


def model_choice(text: str) -> str:
    """``--model``'s value: a path as typed, or a name of a shipped model in any letter case
    (``Demo`` is ``demo``) where no file or folder of the typed name exists. A dataset folder
    (``unmask prepare``'s) is refused naming the command that trains on it (it read "not a
    checkpoint"). Where a folder
    spelled as the shipped name exists too (``./demo``), ``Demo`` could mean either: one line
    naming both. Only a name that case-folds to a shipped one is looked up
    (``unmask.names``, which imports no torch: ``--model Demo --help`` answers at once)."""
    from unmask.folders import dataset_given_for_model, is_dataset

    if is_dataset(text):
        raise argparse.ArgumentTypeError(dataset_given_for_model(text))
    from unmask.names import SHIPPED_MODELS

    if text.casefold() not in SHIPPED_MODELS or os.path.lexists(text):
        return text
    name = any_case(text, SHIPPED_MODELS, "model")
    if name is None:
        return text  # a path that does not exist: the command says so with its own hints
    if os.path.lexists(name):
        raise argparse.ArgumentTypeError(name_and_path_clash(text, name, "shipped model"))
    return name


def check_model_exists(args: argparse.Namespace) -> None:
    """Refuse a ``--model`` (and a ``--draft``) that names nothing here (no such folder, no
    shipped model), in the line loading it says (``unmask.folders.missing_model``), without
    importing torch: a command's ``check_flags`` calls it, so ``unmask.cli`` says it before
    torch loads (it took seconds). A command without ``--model``, or a run of the shipped
    default: nothing."""
    from unmask.errors import refuse
    from unmask.folders import missing_model

    for flag in ("model", "draft"):
        given = getattr(args, flag, None)
        if given is not None:
            refuse(missing_model(given))


def check_template_given(args: argparse.Namespace) -> None:
    """Refuse, without importing torch, a ``--template`` that ``unmask.chat.template_arg``
    refuses whatever the model (no such file, a folder, Jinja that fails on a message), in
    the line the run says (it waited seconds for torch). A pipe (``<(...)``) is left to the
    run, which reads it once; a file is read here and again by the run."""
    value = getattr(args, "template", None)
    if value is None or (os.path.exists(value) and not os.path.isdir(value)
                         and not os.path.isfile(value)):
        return
    from unmask.chat import template_arg

    template_arg(value)


def name_and_path_clash(text: str, name: str, what: str) -> str:
    """The refusal of ``text``, the built-in ``name`` (``what``: "shipped model", "built-in
    tokenizer") in another letter case, where a file or folder spelled ``name`` exists: the
    one rule of ``--model``, ``--template`` and ``--tokenizer``: a path of the exact typed name
    wins (``plain`` with ``./plain`` here is the file), so ``PLAIN`` could mean either."""
    kind = "folder" if os.path.isdir(name) else "file"
    return (f"{text}: ambiguous: ./{name} is a {kind} here and {name} the {what}: type "
            f"./{name} for the {kind} (a path of the exact name wins), or run where there is "
            f"no ./{name} for the {what}")


def add_device_flag(parser: argparse.ArgumentParser | Any, *, default: str | None = "auto") -> None:
    """``--device``: ``auto`` (cuda if available), ``cpu`` or ``cuda[:i]`` on every command.
    ``default=None`` keeps an unset flag None (a dataclass field then keeps its value)."""
    _mark(parser.add_argument(
        "--device", default=default, metavar="DEVICE", type=device_choice,
        help="auto (cuda if available), cpu or cuda[:i] (default: auto)",
    ))


DEVICE_KINDS = ("auto", "cpu", "cuda")
"""What ``--device`` names before an optional ``:i`` (``unmask.config.resolve_device``)."""


def device_choice(text: str) -> str:
    """``--device``'s value in torch's spelling, in any letter case (``CPU``, ``CUDA:0``):
    ``auto``, ``cpu`` or ``cuda`` with an optional ``:i`` (``auto`` without). Anything else
    is one line naming the spellings; whether the device exists is checked when the model is
    placed (``resolve_device``)."""
    kind, colon, index = text.partition(":")
    known = any_case(kind.strip(), DEVICE_KINDS, "device")
    if known is None:  # as resolve_device says it of a device torch has and unmask does not run
        raise argparse.ArgumentTypeError(
            f"device {text!r} is not supported; use auto, cpu or cuda[:i] (e.g. cuda:0)")
    if colon and (known == "auto" or not (index.isascii() and index.isdigit())):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: auto takes no index, cpu and cuda a whole number "
            "(e.g. cuda:0)")
    return f"{known}{colon}{int(index) if colon else ''}"


def add_dtype_flag(parser: argparse.ArgumentParser | Any) -> None:
    """``--dtype``: the weights' dtype while decoding (``unmask.api.decode_dtype``)."""
    from unmask.config import DECODE_DTYPES, DTYPE_ALIASES, dtype_choice

    def choice(text: str) -> str:  # any case (BF16, Float16), aliases as dtype_choice
        spelled = any_case(text, [*DECODE_DTYPES, *DTYPE_ALIASES], "dtype") or text
        try:
            return dtype_choice(spelled)
        except ValueError as e:  # UserError: argparse prints the one line and exits 2
            raise argparse.ArgumentTypeError(str(e)) from None

    _mark(parser.add_argument(
        "--dtype", default="auto", type=choice, metavar="|".join(DECODE_DTYPES),
        help="the weights' dtype while decoding: auto (bf16 on a CPU with AMX for a "
             "masked-diffusion checkpoint, measured 1.6-2.4x faster with the same held-out "
             "bound; otherwise as stored), fp32, bf16 or fp16 (default: auto; docs/sampling.md, "
             "'Precision')",
    ))


def default_threads() -> int:
    """CPU threads for torch when ``--threads`` is not given: ``$OMP_NUM_THREADS`` when the
    user set it, else the physical cores among the CPUs this process may run on
    (``os.sched_getaffinity``: what a container or ``taskset`` allows rather than every core
    of the machine; hyperthread siblings count once, ``physical_cores``), as torch's own
    default counts them: a second thread on a core's sibling slows matrix products down."""
    env = _env_threads()
    if env is not None:
        return env
    cpus = _usable_cpus()
    if cpus is None:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
    return max(1, physical_cores(cpus) or len(cpus))


def _usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (``os.sched_getaffinity``), None where the system
    does not say (macOS, Windows)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None


def _env_threads() -> int | None:
    """``$OMP_NUM_THREADS`` when the user set it to a positive count (ASCII digits: ``²`` is
    a digit to ``str.isdigit`` and a ``ValueError`` to ``int``), else None; a count over
    ``--threads``' bound (``_most_threads``) is capped at it, with a one-line note on stderr:
    ``OMP_NUM_THREADS=5000`` on 2 CPUs decoded 4 tokens in 17 s instead of 0.02 s. Not
    refused as the flag is: the variable is often set for other programs (a job script's
    count for the whole node, in a container, ``taskset`` or a Slurm job given a few CPUs)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if not (env.isascii() and env.isdigit() and int(env) > 0):
        return None
    n = int(env)
    most, cpus = _most_threads()
    if n > most:
        print(f"unmask: note: OMP_NUM_THREADS={n} is more than 4 threads per CPU this process "
              f"may use ({cpus}): using {most}; pass --threads N to choose", file=sys.stderr)
    return min(n, most)


def physical_cores(cpus: Iterable[int], sysfs: str = "/sys/devices/system/cpu") -> int | None:
    """How many physical cores the logical ``cpus`` are on (Linux sysfs topology: CPUs that
    list the same ``thread_siblings_list`` share a core); None when the topology is not
    readable."""
    cores = set()
    for cpu in cpus:
        path = os.path.join(sysfs, f"cpu{cpu}", "topology", "thread_siblings_list")
        try:
            with open(path, encoding="ascii") as f:
                cores.add(f.read().strip())
        except OSError:
            return None
    return len(cores) or None


def at_least(least: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``least`` (``at_least(0)``: a count
    where 0 means none or a default). A bad value is one line: ``expected a whole number, got
    'x'`` or ``must be at least N, got n``. The CLI's and the benchmark scripts' one check."""

    def whole_number(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
        return n

    whole_number.__doc__ = f"An argparse ``type``: a whole number of at least {least}."
    return whole_number


positive_int = at_least(1)
"""An argparse ``type``: a whole number of at least 1 (``at_least(1)``)."""


def finite_float(text: str) -> float:
    """A number flag's value: any float but nan and inf (which no option means, and which
    would fail deep inside torch instead of here with one line)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return x


def _threads(text: str) -> int:
    """``--threads``: at least 1, at most 4 threads per CPU this process may use (more only
    slows it down: 1,000 threads on 2 CPUs took 150 times as long, 100,000 crashed)."""
    n = positive_int(text)
    most, cpus = _most_threads()
    if n > most:
        raise argparse.ArgumentTypeError(
            f"at most {most} (4 per CPU; this process may use {cpus}), got {n}")
    return n


def _most_threads() -> tuple[int, int | None]:
    """The most CPU threads a command takes (4 per CPU this process may use), and those
    CPUs (None: not known)."""
    usable = _usable_cpus()
    cpus = len(usable) if usable is not None else os.cpu_count()
    return 4 * max(1, cpus or 1), cpus


def add_threads_flag(parser: argparse.ArgumentParser | Any) -> None:
    """``--threads N``: torch's CPU threads, on every command that runs a model."""
    _mark(parser.add_argument(
        "--threads", type=_threads, default=None, metavar="N",
        help="CPU threads for torch (default: $OMP_NUM_THREADS if set, else the physical "
             "cores this process may use; for generate, chat, demo, infill, edit and "
             "fill-form, one when the model's weights are under 100 MB); fewer than the cores "
             "helps on a shared machine",
    ))


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[None]:
    """torch uses ``n`` CPU threads inside the block; the previous count comes back after,
    so an in-process caller (tests, notebooks) keeps its own setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed(text: str) -> int:
    from unmask.config import MAX_SEED

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**63 - 1, got {n}")
    return n


def add_seed_flag(
    parser: argparse.ArgumentParser | Any,
    *,
    what: str,
    default: int | None = None,
    shown_default: int | None = None,
) -> None:
    """``--seed N``: what it seeds (``what``) differs per command; the same seed gives the
    same output. ``default`` is the parsed value when the flag is not given;
    ``shown_default`` the one the help states when they differ (a dataclass field's)."""
    shown = default if shown_default is None else shown_default
    said = f" (default: {shown})" if shown is not None else " (default: a fresh one each run)"
    _mark(parser.add_argument(
        "--seed", type=_seed, default=default, metavar="N",
        help=f"seed for {what}; the same seed gives the same output{said}",
    ))


def add_json_flag(parser: argparse.ArgumentParser | Any, *, what: str = "") -> None:
    """``--json``: one JSON object on stdout instead of text (``what`` lists its fields)."""
    _mark(parser.add_argument(
        "--json", action="store_true",
        help="print one JSON object instead of text" + (f" ({what})" if what else ""),
    ))


def add_no_live_flag(parser: argparse.ArgumentParser | Any) -> None:
    """``--no-live``: no live view of the canvas in the terminal."""
    _mark(parser.add_argument(
        "--no-live", action="store_true", help="do not draw the canvas while it is denoised",
    ))


def add_no_progress_flag(parser: argparse.ArgumentParser | Any) -> None:
    """``--no-progress``: no progress bars."""
    _mark(parser.add_argument("--no-progress", action="store_true", help="hide progress bars"))


def add_quantize_flag(parser: argparse.ArgumentParser | Any) -> None:
    """``--quantize int8|int4``: weight-only quantisation at load (``unmask.quantize``, whose
    ``QUANTIZATIONS`` are the choices; it imports no torch, so ``--help`` stays light)."""
    from unmask.quantize import QUANTIZATIONS

    _mark(parser.add_argument(
        "--quantize", type=registry_choice("quantization", list(QUANTIZATIONS)), default=None,
        metavar="|".join(QUANTIZATIONS),
        help="quantise the linear layers weight-only at load with torchao: int8 (half of bf16) "
             "or int4 (a quarter on CUDA; on CPU int4 values in int8 storage); "
             "docs/large-models.md",
    ))


def add_runtime_flags(parser: argparse.ArgumentParser | Any, *, decodes: bool = False) -> None:
    """``--device`` and ``--threads``: where a model runs. ``decodes``: the command decodes a
    few rows with ``--model`` (generate, chat, demo, infill, edit, fill-form), so it takes
    ``--dtype`` too and an unset ``--threads`` follows ``decode_threads``."""
    add_device_flag(parser)
    add_threads_flag(parser)
    if decodes:
        add_dtype_flag(parser)
        parser.set_defaults(decodes_model=True)


def command_threads(args: argparse.Namespace) -> int:
    """torch's CPU threads for a command that runs a model: ``--threads``, else
    ``decode_threads`` for a command that decodes (``add_runtime_flags(decodes=True)``; not
    ``unmask demo --train``, which trains first), else ``default_threads``."""
    if getattr(args, "threads", None):
        return int(args.threads)
    if getattr(args, "decodes_model", False) and not getattr(args, "train", False):
        return decode_threads(getattr(args, "model", None))
    return default_threads()


SMALL_WEIGHTS_BYTES = 100_000_000
"""Checkpoints whose weights files are smaller than this decode on one CPU thread by default
(``decode_threads``): about 25M parameters in float32, 50M in 16 bits."""


def decode_threads(model: str | None) -> int:
    """CPU threads for a command that decodes ``model`` (None: the shipped demo) when
    ``--threads`` is not given: ``$OMP_NUM_THREADS`` when set; one thread for a small model
    (weights under ``SMALL_WEIGHTS_BYTES``); else ``default_threads``. Measured on the 2-core
    development machine (docs/sampling.md, "Threads"): a decoding step of a small model is
    many tiny operations, and with ``OMP_WAIT_POLICY=PASSIVE`` every one of them wakes the
    sleeping second thread, so one row of the demo's AR twin decoded 2.5x faster on one
    thread than on two (the demo model 1.3x); at 91M parameters two threads were 1.17x
    faster. Reads file sizes only: torch is not imported yet."""
    env = _env_threads()
    if env is not None:
        return env
    size = weights_bytes(model)
    return 1 if size is not None and size < SMALL_WEIGHTS_BYTES else default_threads()


def weights_bytes(model: str | None) -> int | None:
    """Total size of the ``*.safetensors`` / ``*.bin`` weights of the checkpoint ``model`` (a
    run directory, checkpoint folder or publisher folder; None or ``demo``: the shipped demo
    model), None when there are none to read (the command reports a bad path itself)."""
    root = _model_root(model)
    for folder in (root, root / "checkpoint"):
        try:
            files = [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin")]
        except OSError:
            continue
        if files:
            return sum(f.stat().st_size for f in files)
    return None


def recommended_options(model: str | None) -> dict[str, Any] | None:
    """The sampling options the native checkpoint ``model`` recommends (its config.json's
    ``sample_defaults``; ``{}``: none), read without torch, so that a command checks the
    flags against the policy the run will take before a multi-GB model loads. None where
    they are not known before loading: a publisher's folder (its importer sets them), a
    folder or config.json that ``unmask.load`` refuses (it says why, later)."""
    from unmask.convert.load import is_publisher_folder
    from unmask.errors import UserError
    from unmask.files import read_json
    from unmask.folders import CHECKPOINT_FOLDERS

    root = _model_root(model)
    # where checkpoint_dir looks: the folder, RUN/checkpoint, RUN/.checkpoint.old (not best/)
    for folder in (root, *(root / sub for sub in CHECKPOINT_FOLDERS[:2])):
        try:
            if not ((folder / "config.json").is_file()
                    and (folder / "model.safetensors").is_file()):
                continue
            if is_publisher_folder(folder):
                return None
            options = read_json(folder / "config.json").get("sample_defaults", {})
        except (OSError, UserError):
            return None
        return options if isinstance(options, dict) else None
    return None


def _model_root(model: str | None) -> Path:
    """The folder ``--model`` names, as typed (None or ``demo`` where no such folder is here:
    the shipped demo model), unresolved: the command reports a bad one itself."""
    from unmask.files import asset_path

    root = Path(model) if model is not None else asset_path("demo")
    return asset_path("demo") if model == "demo" and not root.exists() else root


# -- registry-valued flags ---------------------------------------------------------------


Choices = Sequence[str] | Callable[[], Iterable[str]]
"""Static choices, or a function returning a registry's names (called only when needed)."""


def any_case(value: str, known: Iterable[str], what: str) -> str | None:
    """The entry of ``known`` that ``value`` names in any letter case: ``value`` itself when
    it is one, else the one entry equal to it case-folded, else None. Entries that differ
    only in case and both match are ambiguous: ``argparse.ArgumentTypeError`` naming them
    (``what``: the kind of name). The one case rule of every flag whose values are names:
    registries, ``--device``, ``--dtype``, ``--model demo``."""
    known = list(known)
    if value in known:
        return value
    same = [n for n in known if n.casefold() == value.casefold()]
    if len(same) > 1:  # entries that differ only in case: the exact spelling picks one
        raise argparse.ArgumentTypeError(
            f"ambiguous {what} {value!r}: matches {', '.join(same)} (give one exactly)"
        )
    return same[0] if same else None


def registry_choice(what: str, names: Choices) -> Callable[[str], str]:
    """An argparse ``type`` accepting a name of a registry, in any letter case (``--to LLaDA``
    is ``llada``, as the papers and model cards spell it; ``any_case``): the registry's
    own spelling is returned; a name that matches none is refused with the choices (a
    fixed list in argparse's words, ``invalid choice: 'x'``), one that matches several
    entries that differ only in case is ambiguous (refused naming them). The
    case-folding is the command line's convenience: the library (``SampleConfig``,
    ``unmask.api``) and the server take a registry's exact names. ``names`` is a list of
    the choices or a function returning them, called only when the flag is given
    (registries live in torch modules; ``--help`` must not import them), and the help
    names the entries itself (a test checks every entry is named)."""
    listed = names if callable(names) else (lambda: names)

    def check(value: str) -> str:
        known = sorted(listed()) if callable(names) else list(names)
        name = any_case(value, known, what)
        if name is None and not callable(names):  # a fixed list: as argparse's choices say it
            raise argparse.ArgumentTypeError(
                f"invalid choice: {value!r} (choose from {', '.join(map(repr, known))})")
        if name is None:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {value!r} (choose from {', '.join(known)})"
            )
        return name

    check.__name__ = what  # argparse names the type in some messages
    check.registry_names = listed  # type: ignore[attr-defined]
    return check


def name_or_path(what: str, names: Choices, *,
                 empty: Callable[[], str] | None = None) -> Callable[[str], str]:
    """An argparse ``type`` for a flag that takes a built-in name or a path (``--template
    plain|FILE``, ``--tokenizer byte|PATH``), by ``--model``'s rule: a file or folder of the
    typed name is that path (``plain`` with ``./plain`` here comes back as ``./plain``, which
    the command reads as a path: it took the built-in); else a built-in name in any letter
    case (``PLAIN`` is ``plain``; ``any_case``), refused as ambiguous where a path spelled
    as that name exists (``name_and_path_clash``); else the text as typed (the command reads
    it as a path, or as it documents). An empty value is refused (``train --chat-template ""``
    trained with the ``--init`` model's template without a word), saying what to give:
    ``empty()`` where given, else a built-in name or a path. ``names``: the names, or a
    function returning them (called only when the flag is given)."""

    def check(text: str) -> str:
        known = list(names() if callable(names) else names)
        if not text.strip():  # a variable left unset: "" is the working folder to a path
            hint = empty() if empty else f"give a built-in {what} ({', '.join(known)}) or a path"
            raise argparse.ArgumentTypeError(f"empty: {hint}")
        if os.path.lexists(text):
            return os.path.join(".", text) if text in known else text
        name = any_case(text, known, what)
        if name is not None and os.path.lexists(name):
            raise argparse.ArgumentTypeError(name_and_path_clash(text, name, f"built-in {what}"))
        return name or text

    check.__name__ = what  # argparse names the type in some messages
    return check


def template_names() -> list[str]:
    """The built-in chat templates' names (``unmask.chat.BUILTIN_TEMPLATES``; no torch), for
    ``--template``'s ``name_or_path``."""
    from unmask.chat import BUILTIN_TEMPLATES

    return list(BUILTIN_TEMPLATES)


def _empty_template() -> str:
    """``unmask.chat.EMPTY_TEMPLATE``: what to give for an empty chat template flag."""
    from unmask.chat import EMPTY_TEMPLATE

    return EMPTY_TEMPLATE


template_name_or_path = name_or_path("chat template", template_names, empty=_empty_template)
"""The argparse ``type`` of every chat template flag (chat's and generate's ``--template``,
serve's and train's ``--chat-template``): a built-in name or a path, by ``name_or_path``."""


# -- dataclass flags ---------------------------------------------------------------------

_SEED_WHAT = {
    "SampleConfig": "sampling (temperature, random remasking)",
    "TrainConfig": "initialisation, data order and noise",
}


def _shared_field(parser: Any, cls: type, name: str, default: Any) -> bool:
    """Add the shared flag for dataclass field ``name`` (once per parser); False when the
    field is not a shared flag. Unset, each stays None so the dataclass keeps its value."""
    flag = "--" + name
    if name not in ("device", "threads", "seed"):
        return False
    if any(flag in a.option_strings for a in parser._actions):
        return True
    if name == "device":
        add_device_flag(parser, default=None)
    elif name == "threads":
        add_threads_flag(parser)
    else:
        what = _SEED_WHAT.get(cls.__name__, "randomness")
        add_seed_flag(parser, what=what, default=None, shown_default=default)
    return True


_PATH_METAVARS = {"data": "PATH", "out": "DIR", "init": "PATH", "config": "FILE",
                  "chat_template": "FILE|NAME"}  # as chat's, generate's and serve's --template


_POSITIVE = ("steps",)
"""Integer fields whose flag must be at least 1 on every command (``--steps 0`` filled a gap
in one forward, silently, where generate refused it)."""


def add_dataclass_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    skip: Sequence[str] = (),
    choices: Mapping[str, Choices] | None = None,
    shown_defaults: Mapping[str, str] | None = None,
) -> None:
    """One typed ``--flag`` per dataclass field, the field's docstring (plain text) as help.

    Unset flags stay None so ``dataclass_from_args`` keeps the dataclass (or base) value.
    Fields that are shared flags (``device``, ``threads``, ``seed``) use the shared
    definition, once per parser. A ``choices`` entry that is a function is a
    registry, checked only when the flag is given. A field that holds a mapping or a sequence
    (``exempt_ids``, ``model_overrides``) gets no flag. A ``shown_defaults`` entry is what the
    command takes for that field when its flag is not given, where that is not the
    dataclass's default (``own_default``).
    """
    from unmask.config import field_docs

    docs = field_docs(cls)
    defaults = cls()
    # --init Demo: the demo; --chat-template PLAIN, or ./plain: as chat's --template
    types = {"init": model_choice, "chat_template": template_name_or_path}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if _shared_field(parser, cls, f.name, default):
            continue
        help_ = help_text(docs.get(f.name, ""))
        if f.name in (shown_defaults or {}):
            help_ = own_default(help_, (shown_defaults or {})[f.name])
        else:
            help_ = with_default(help_, default)
        kind = str(f.type)
        allowed = (choices or {}).get(f.name)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=positive_int if f.name in _POSITIVE else int,
                                default=None, metavar="N", help=help_)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=finite_float, default=None, metavar="X",
                                help=help_)
        elif callable(allowed):
            parser.add_argument(flag, type=registry_choice(f.name.replace("_", " "), allowed),
                                default=None, metavar="NAME", help=help_)
        elif allowed is not None:
            parser.add_argument(flag, default=None, metavar="NAME",
                                type=registry_choice(f.name.replace("_", " "), list(allowed)),
                                help=f"{help_} (one of: {', '.join(allowed)})"
                                if not all(a in help_ for a in allowed) else help_)
        elif kind.startswith(("dict", "tuple", "list")):
            continue  # no flag for a mapping or a sequence (a text was refused whatever it
            # held: --exempt-ids 5); commands give their own (e.g. --model-set)
        else:
            metavar = _PATH_METAVARS.get(f.name, "TEXT")
            parser.add_argument(flag, default=None, metavar=metavar, type=types.get(f.name),
                                help=help_)


def given_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given on the command line, with their values.

    Generated flags default to None, so "given" is "not None"; this is what lets a command
    tell an explicit ``--steps 1000`` from the default 1000 (e.g. ``train --resume``).
    """
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def dataclass_from_args(cls: type[T], args: argparse.Namespace, *, base: T | None = None) -> T:
    """``base`` (or the defaults) with every flag that was given on the command line."""
    given = given_fields(cls, args)
    return dataclasses.replace(base if base is not None else cls(), **given)  # type: ignore[type-var]
