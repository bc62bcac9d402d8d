"""``unmask infill``: fill the gaps of a template (``"The [MASK:6] sat on the [MASK]."``), with
gap constraints from flags (``--choices``, ``--regex``, ``--charset``, ``--ban``).

Also the pieces ``unmask edit`` and ``unmask fill-form`` share: loading the model, the
live view, and the common flags. See docs/infill.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from unmask.commands import (
    add_dataclass_flags,
    add_json_flag,
    add_model_flag,
    add_no_live_flag,
    add_runtime_flags,
    dataclass_from_args,
    given_fields,
)
from unmask.commands.sample_options import (
    STEPS_PER_MASK,
    add_sample_flags,
    sample_config_from_args,
    with_seed,
)
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError
from unmask.files import read_user_stdin, require_stdout
from unmask.messages import plural
from unmask.terminal import json_text, shown_text


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, the sampling flags of ``unmask generate``, ``--json``, ``--no-live``,
    ``--device``, ``--threads``."""
    add_model_flag(parser)
    add_sample_flags(parser, steps=STEPS_PER_MASK)
    add_json_flag(parser)
    add_no_live_flag(parser)
    add_runtime_flags(parser, decodes=True)
    for action in parser._actions:  # the flag stays, so a user who gives it hears why not
        if "--gen-length" in action.option_strings:
            action.help = "refused here: the text sets the lengths (see the description)"


def refuse_gen_length(args: argparse.Namespace, task: str) -> None:
    """``--gen-length`` given to a command whose text sets the lengths (infill, edit,
    fill-form; ``task`` a key of ``api.LENGTH_SET_BY``, which the API's refusal says too):
    one line saying what does, before anything loads. It was accepted and ignored, so
    ``--gen-length 200`` ran and wrote the template's few tokens."""
    if getattr(args, "gen_length", None) is not None:
        from unmask.api import LENGTH_SET_BY

        raise UserError(f"--gen-length does not apply: {LENGTH_SET_BY[task]}")


def stdin_text(announce: str) -> str:
    """Standard input less the newline that ends it (``-`` for a template or a text), read
    as ``read_user_stdin`` reads it: a ``"\r\n"`` or ``"\r"`` line end is a ``"\n"`` (spans
    count that text, and a CRLF file's last line end goes as a LF file's does); ``announce``
    (``"unmask infill: reading the template"``) is said first where it is a terminal."""
    return read_user_stdin(announce).removesuffix("\n")


def load_model(args: argparse.Namespace) -> Any:
    """The checkpoint of ``--model`` on ``--device`` in ``--dtype``, in eval mode."""
    from unmask import api

    loaded = api.load_for_decoding(args.model, device=str(resolve_device(args.device)),
                                    dtype=args.dtype)
    loaded.model.eval()
    return loaded


def live_view(args: argparse.Namespace, tokenizer: Any) -> Any:
    """A ``LiveView`` over the whole canvas when stdout is a terminal (and not --json/--no-live)."""
    from unmask.sampling import LiveView

    if args.json or args.no_live:
        return None
    view = LiveView(tokenizer, start=0)
    return view if view.enabled else None


CHARSET_NAMES = ("digits", "lowercase", "uppercase", "alpha", "alnum", "word")
"""The names of ``unmask.infill.template.NAMED_CLASSES``, listed here so that ``--help`` does not
import the infill package (and torch); a test keeps the two equal."""


def register(sub: argparse._SubParsersAction) -> None:
    # torch-free: --help stays fast
    from unmask.config import LENGTH_MODES, LENGTH_SCORES, InfillOptions

    p = sub.add_parser(
        "infill",
        help="fill the gaps of a text template",
        description=(
            "Fill the gaps of a template: [MASK] = one token, [MASK:n] = n tokens, [MASK:min-max] "
            "= a length chosen by the model (ELBO search, or [EMPTY] fillers on a model trained "
            "with --empty-rate); [MASK:name:n] names a gap. Write \\[ for a literal '[' and '\\ ' "
            "for a space the next gap must not take in. Given text is kept; all gaps are denoised "
            "together. Gap lengths count tokens (a word is often one token); to bound characters "
            "use a regex, e.g. --regex '1=\\d{1,3}'. A gap after a space takes the space in, so "
            "a choice such as Rome may be the one token ' Rome'. "
            "--gen-length is refused; --steps is capped at the number of masked tokens (a "
            "time-conditioned SEDD checkpoint's time steps: as given). A causal "
            "checkpoint trained with --fim-rate fills a one-gap template by fill-in-the-middle "
            "instead."
        ),
    )
    p.add_argument("template",
                   help='template text, e.g. "The [MASK:6] sat on the [MASK:thing]." '
                        "('-' = read stdin, as edit --text - and fill-form -)")
    gaps = p.add_argument_group("gap constraints (GAP = a gap's number, 1-based, or its name)")
    gaps.add_argument("--choices", action="append", default=[], metavar="GAP=A|B|C",
                      help="the gap's text is one of these (\\| for a literal bar); repeatable")
    gaps.add_argument("--regex", action="append", default=[], metavar="GAP=PATTERN",
                      help="the gap's text matches PATTERN in full (the subset in "
                           "docs/infill.md); repeatable")
    gaps.add_argument("--charset", action="append", default=[], metavar="GAP=CLASS",
                      help=f"every character of the gap is in CLASS: {', '.join(CHARSET_NAMES)}; "
                           "repeatable")
    gaps.add_argument("--ban", action="append", default=[], metavar="WORD",
                      help="no gap holds a token containing WORD; repeatable")
    add_common_flags(p)
    add_dataclass_flags(
        p, InfillOptions, choices={"length_mode": LENGTH_MODES, "length_score": LENGTH_SCORES}
    )
    p.set_defaults(func=run, check_flags=check_flags)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse the options that are wrong whatever the model and the template (those
    ``SampleConfig`` and ``InfillOptions`` refuse on their own: ``--temperature -1``,
    ``--max-candidates 0``), without importing torch: the command line runs it before torch
    loads (such a typo took seconds, torch first), and before a template is read from
    stdin; nor ``--gen-length`` (``refuse_gen_length``). (A ``--model`` that names nothing is
    said after the template's own refusals, as before: they need torch.)"""
    from unmask.config import InfillOptions

    refuse_gen_length(args, "infill")
    sample_config_from_args(args)
    dataclass_from_args(InfillOptions, args)
    refuse_file_name(args.template)


def refuse_file_name(template: str) -> None:
    """A ``UserError`` for a template with no gap that names an existing file (``unmask
    infill story.txt``, as ``fill-form`` takes a file): the template is the text itself, so
    it said only "template has no gaps"; this says how to give the file (on stdin)."""
    if template == "-" or "[MASK" in template or "\n" in template or len(template) > 4096:
        return
    import shlex
    from pathlib import Path

    try:
        path = Path(template).expanduser()
        named = path.is_file()
    except (OSError, ValueError, RuntimeError):  # not a possible file name (RuntimeError:
        return  # "~5 minutes to go", no user named 5: expanduser finds no home)
    if named:  # the path as the shell must see it: no "~" inside the quotes
        shown = template if path == Path(template) else str(path)
        raise UserError(f"template {template!r} has no gaps, and names a file: the template "
                        f"is the text itself; give the file's text on stdin: unmask infill - "
                        f"< {shlex.quote(shown)}")


def constrained_template(args: argparse.Namespace) -> list[Any]:
    """The template's segments with the gap constraints of ``--choices``, ``--regex``,
    ``--charset`` and ``--ban`` set on its ``Gap`` s (``unmask.infill.options``); ``UserError``
    naming the flag and gap for an unknown gap, a gap constrained twice by one flag, or a bad
    regex or class."""
    from unmask.infill import parse_template, split_choices
    from unmask.infill.options import ConstraintError, constrain_gaps, split_assignment

    specs = {"choices": args.choices, "regex": args.regex, "charset": args.charset}
    try:
        pairs = {o: [split_assignment(s, o, i) for i, s in enumerate(v)] for o, v in specs.items()}
        return constrain_gaps(parse_template(args.template), ban=args.ban, regex=pairs["regex"],
                              choices=[(k, split_choices(v)) for k, v in pairs["choices"]],
                              charset=pairs["charset"])
    except ConstraintError as e:
        spec = "" if e.index is None else f" {specs[e.option][e.index]!r}"
        raise UserError(f"--{e.option}{spec}: {e.reason}") from None


def run(args: argparse.Namespace) -> int:
    from unmask import api
    from unmask.infill import InfillOptions, SearchLimitError
    from unmask.infill.template import GapRoomError

    require_stdout("the filled text")
    refuse_gen_length(args, "infill")
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    given = given_fields(SampleConfig, args)
    options = dataclass_from_args(InfillOptions, args)
    if args.template == "-":
        # less the line end that ends the input
        args.template = stdin_text("unmask infill: reading the template")
    template = constrained_template(args)  # template and constraint errors before loading anything
    loaded = load_model(args)
    config = api.infill_sample_config(loaded, given)
    # whether the fill draws, so whether it has a seed to report: by the decoder api.infill
    # runs (an embed-diffusion checkpoint's own draws at temperature 0 too; a SEDD
    # checkpoint's commit loop does not: it reported a seed that changed nothing)
    config = with_seed(config, api.infill_decoder(loaded))
    if config.seed is not None:
        given["seed"] = config.seed
    live = live_view(args, loaded.tokenizer)  # a causal checkpoint's fill left to right too
    t0 = time.perf_counter()
    try:
        # the checkpoint's own way (api.infill, as the server): masked diffusion, fixed-length
        # gaps of embed-diffusion, one gap by fill-in-the-middle on a causal model; a latent
        # model is refused
        # the options given (a dict, as the server): api.infill puts an embed-diffusion
        # checkpoint's recommendation under them
        result = api.infill(loaded, template, config=given, options=options,
                            step_callback=live).detail
    except (SearchLimitError, GapRoomError) as e:  # the flags to give, typed or not
        raise UserError(e.message(spell=lambda f: "--" + f.replace("_", "-"))) from None
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    if args.json:
        out = result.as_dict()
        out["seconds"] = round(seconds, 4)
        out["config"] = dataclasses.asdict(config)
        print(json_text(out))
        return 0
    print(shown_text(result.text))
    lengths = ", ".join(f"{g.name}: {len(g.tokens)}" for g in result.gaps)
    how = f", lengths by {result.length_mode}" if result.length_mode else ""
    if result.length_mode == "elbo":
        how += f" ({options.length_score.replace('_', ' ')})"
    print(f"{plural(len(result.gaps), 'gap')} ({lengths}{how}), {result.nfe} NFE in "
          f"{seconds:.2f} s", file=sys.stderr)
    return 0
