"""``unmask prepare``: tokenize a corpus into train/validation token shards (see docs/data.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from unmask.commands import add_no_progress_flag, add_seed_flag, name_or_path, registry_choice

MIN_VAL_TOKENS = 32768  # unmask.data.MIN_VAL_TOKENS, not imported: data.py imports torch


def register(subparsers: Any) -> None:
    """Add the ``prepare`` subcommand to the ``unmask`` parser."""
    p = subparsers.add_parser(
        "prepare",
        help="tokenize text / JSONL files into token shards for training",
        description=(
            "Tokenize text files (one file = one document, or one line with --line-docs), "
            "gzip / xz / bzip2 compressed text, JSONL files (one line = one document) and "
            "directories into train/validation token shards plus index.json and "
            "tokenizer.json (docs/data.md)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or directories ('-' = standard input)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="dataset directory to create")
    p.add_argument(
        "--tokenizer",
        default="bpe",
        type=name_or_path("tokenizer", ("bpe", "byte")),
        metavar="bpe|byte|PATH",
        help="train byte-level BPE on the corpus (bpe), use bytes (byte), or load a "
        "tokenizer.json / directory (default: bpe)",
    )
    p.add_argument(
        "--vocab-size", type=int, default=None, metavar="N",
        help="BPE vocabulary size, --tokenizer bpe only (default: 4096)",
    )
    p.add_argument(
        "--text-field", default="text", metavar="NAME",
        help="JSONL field holding the text (default: text)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.01,
        metavar="X",
        help="fraction of the tokens held out for validation, in whole 4096-token blocks, "
        "at most half the corpus; 0 = none (default: 0.01)",
    )
    p.add_argument(
        "--min-val-tokens",
        type=int,
        default=MIN_VAL_TOKENS,
        metavar="N",
        help=f"smallest validation split in tokens (default: {MIN_VAL_TOKENS})",
    )
    p.add_argument(
        "--line-docs",
        action="store_true",
        help="each non-blank line of a text file is one document",
    )
    p.add_argument(
        "--errors",
        type=registry_choice("errors", ("strict", "replace")),
        metavar="strict|replace",
        default="strict",
        help="undecodable bytes: fail (strict) or replace with U+FFFD (default: strict)",
    )
    add_seed_flag(p, what="the train/validation split", default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    add_no_progress_flag(p)
    p.set_defaults(func=run, check_flags=check_flags)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads: such
    a line took seconds), what ``unmask.data.prepare`` would refuse first whatever the
    corpus: ``--vocab-size`` with a tokenizer that brings its own vocabulary, numbers out of
    range (``unmask.flag_checks.check_prepare_numbers``), an input that is not there
    (``missing_input``; ``-`` is standard input)."""
    from unmask.errors import UserError, refuse
    from unmask.flag_checks import check_prepare_numbers, missing_input

    if args.vocab_size is not None and args.tokenizer != "bpe":
        raise UserError(f"--vocab-size trains a BPE tokenizer (--tokenizer bpe); "
                        f"--tokenizer {args.tokenizer} brings its own vocabulary")
    check_prepare_numbers(tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          val_fraction=args.val_fraction, min_val_tokens=args.min_val_tokens)
    for item in args.inputs:
        if item != "-":
            refuse(missing_input(item))


def run(args: argparse.Namespace) -> int:
    """Run ``prepare`` and print a short summary."""
    from unmask.data import prepare

    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    info = prepare(
        args.inputs,
        args.out,
        tokenizer=args.tokenizer,
        **({} if args.vocab_size is None else {"vocab_size": args.vocab_size}),
        text_field=args.text_field,
        val_fraction=args.val_fraction,
        min_val_tokens=args.min_val_tokens,
        line_docs=args.line_docs,
        errors=args.errors,
        seed=args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    train, val = info.n_tokens.get("train", 0), info.n_tokens.get("val", 0)
    total = max(1, train + val)
    print(f"prepared {info.out}")
    print(f"  documents        {info.n_documents:,}")
    print(f"  train tokens     {train:,} ({100 * train / total:.1f}%)")
    print(f"  val tokens       {val:,} ({100 * val / total:.1f}%)")
    print(f"  bytes per token  {info.bytes_per_token:.3f}")
    print(f"  vocab size       {info.vocab_size:,} ({info.dtype})")
    for note in info.notes:
        print(f"unmask prepare: note: {note}", file=sys.stderr)
    return 0
