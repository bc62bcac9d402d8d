"""``unmask edit``: re-mask spans of a text and regenerate them (see docs/infill.md)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time

from unmask.commands import check_model_exists, given_fields, registry_choice
from unmask.commands.infill import (
    add_common_flags,
    live_view,
    load_model,
    refuse_gen_length,
    stdin_text,
)
from unmask.commands.sample_options import sample_config_from_args, with_seed
from unmask.errors import UserError
from unmask.files import require_stdout
from unmask.messages import plural
from unmask.terminal import json_text, shown_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit",
        help="rewrite spans of a text",
        description=(
            "Re-mask parts of a text and regenerate them given everything else: character spans "
            "(--span START:END, repeatable), every match of --regex, or the --lowest K tokens "
            "by the "
            "model's confidence (--rounds N repeats that, reporting what changed). Text outside "
            "the spans is kept exactly. --gen-length is refused: a span is refilled with as many "
            "tokens as it held."
        ),
    )
    p.add_argument("--text", required=True, metavar="TEXT",
                   help="the text to edit ('-' = read stdin, less the newline that ends it)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--span", action="append", metavar="START:END",
                      help="character range to rewrite (0-based, end exclusive); repeatable")
    what.add_argument("--regex", metavar="PATTERN",
                      help="rewrite every match of this (Python) regex")
    what.add_argument("--lowest", type=int, metavar="K",
                      help="rewrite the K least confident tokens")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="with --lowest: repeat re-mask → refill N times (default: 1)")
    p.add_argument("--confidence-mode", default="masked", metavar="masked|visible",
                   type=registry_choice("confidence mode", ("masked", "visible")),
                   help="token confidence for --lowest: p(token) with its position masked "
                        "(default) or visible")
    add_common_flags(p)
    p.set_defaults(func=run, check_flags=check_flags)


_DIGITS = re.compile("[0-9]+")


def _spans(raw: list[str]) -> list[tuple[int, int]]:
    out = []
    for s in raw:
        start, sep, end = s.partition(":")
        # ASCII digits: str.isdigit() took '²' (int() then raised a traceback) and '٣' (3)
        if not sep or not _DIGITS.fullmatch(start.strip()) or not _DIGITS.fullmatch(end.strip()):
            raise UserError(f"--span {s!r}: expected START:END (character offsets, e.g. 6:15)")
        out.append((int(start), int(end)))
    return out


def check_flags(args: argparse.Namespace) -> None:
    """Refuse the flags that are wrong whatever the model and the text (``--span``,
    ``--rounds``, ``--lowest``, ``--confidence-mode`` without it: it was ignored, the
    sampling options ``SampleConfig`` refuses on their own), without importing torch: the
    command line runs it before torch loads (such a typo took seconds, torch first), and
    before a text is read from stdin; ``--gen-length`` (``refuse_gen_length``) and a
    ``--model`` that names nothing (``check_model_exists``) too."""
    refuse_gen_length(args, "edit")
    if args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {args.rounds}")
    if args.rounds > 1 and args.lowest is None:
        raise UserError("--rounds needs --lowest (spans and regex matches are rewritten once)")
    if args.span:
        _spans(args.span)
    if args.lowest is not None and args.lowest < 1:
        raise UserError(f"--lowest must be at least 1, got {args.lowest}")
    if args.lowest is None and args.confidence_mode != "masked":  # it scored nothing
        raise UserError(f"--confidence-mode {args.confidence_mode} applies to --lowest (it "
                        "scores the tokens to re-mask); --span and --regex choose the text "
                        "themselves")
    sample_config_from_args(args)
    check_model_exists(args)


def run(args: argparse.Namespace) -> int:
    from unmask import api

    require_stdout("the edited text")
    refuse_gen_length(args, "edit")
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    config = with_seed(sample_config_from_args(args))  # a sampled run reports its seed
    api.check_policy_options(config.policy, given_fields(type(config), args))  # as /v1/edit
    # as infill's template: the newline that ends the input is not part of the text
    text = stdin_text("unmask edit: reading the text") if args.text == "-" else args.text
    spans = _spans(args.span) if args.span else []
    loaded = load_model(args)
    api.edit_checks(loaded)  # a continuous or causal model, before the live view starts
    live = live_view(args, loaded.tokenizer)
    t0 = time.perf_counter()
    try:  # through the API entry, as the server
        result = api.edit(loaded, text, spans=spans, regex=args.regex, lowest=args.lowest,
                          rounds=args.rounds, config=config,
                          confidence_mode=args.confidence_mode, step_callback=live).detail
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    if args.json:
        out = dataclasses.asdict(result)
        out["seconds"] = round(seconds, 4)
        out["config"] = dataclasses.asdict(config)  # the options it ran with, as infill --json
        print(json_text(out))
    else:
        print(shown_text(result.text))
        for c in result.changes:
            print(f"round {c.round}: {c.old!r} -> {c.new!r}", file=sys.stderr)
        print(f"{plural(len(result.changes), 'change')} in {plural(result.rounds, 'round')}, "
              f"{result.nfe} NFE in {seconds:.2f} s",
              file=sys.stderr)
    if result.stopped:  # fewer rounds than --rounds, not for a round that changed nothing
        print(f"unmask edit: note: {result.stopped}", file=sys.stderr)
    return 0
