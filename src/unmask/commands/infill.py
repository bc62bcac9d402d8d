"""``unmask infill``: fill the gaps of a template (``"The [MASK:6] sat on the [MASK]."``).

Also the pieces ``unmask edit`` and ``unmask fill-form`` share: loading the model, the
live view, and the common flags. See docs/infill.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from unmask.commands import add_dataclass_flags, dataclass_from_args
from unmask.commands.generate import add_sample_flags, sample_config_from_args
from unmask.config import resolve_device


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, the sampling flags of ``unmask generate``, ``--json``, ``--no-live``, ``--device``."""
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="run directory or checkpoint folder")
    add_sample_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-live", action="store_true", help="do not draw the canvas while it is denoised")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i] (default: auto)")


def load_model(args: argparse.Namespace) -> Any:
    """The checkpoint of ``--model`` on ``--device``, in eval mode."""
    from unmask.checkpoint import load

    loaded = load(args.model, device=str(resolve_device(args.device)))
    loaded.model.eval()
    return loaded


def live_view(args: argparse.Namespace, tokenizer: Any) -> Any:
    """A ``LiveView`` over the whole canvas when stdout is a terminal (and not --json/--no-live)."""
    from unmask.sampling import LiveView

    if args.json or args.no_live:
        return None
    view = LiveView(tokenizer, start=0)
    return view if view.enabled else None


def register(sub: argparse._SubParsersAction) -> None:
    from unmask.infill import InfillOptions

    p = sub.add_parser(
        "infill",
        help="fill the gaps of a text template",
        description=(
            "Fill the gaps of a template: [MASK] = one token, [MASK:n] = n tokens, [MASK:min-max] = a "
            "length chosen by the model's likelihood (ELBO). Write \\[ for a literal '['. Given text is "
            "kept; all gaps are denoised together. --gen-length is ignored; --steps is capped at the "
            "number of masked tokens. A causal checkpoint trained with --fim-rate fills a one-gap "
            "template by fill-in-the-middle instead."
        ),
    )
    p.add_argument("template", help='template text, e.g. "The [MASK:6] sat on the [MASK]."')
    add_common_flags(p)
    add_dataclass_flags(p, InfillOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unmask.infill import InfillOptions, infill, infill_causal, parse_template

    config = sample_config_from_args(args)
    options = dataclass_from_args(InfillOptions, args)
    parse_template(args.template)  # template errors before loading anything
    loaded = load_model(args)
    causal = getattr(loaded.config, "attention", None) == "causal"
    live = None if causal else live_view(args, loaded.tokenizer)
    t0 = time.perf_counter()
    try:
        if causal:  # the autoregressive baseline: one gap, filled by fill-in-the-middle
            result = infill_causal(loaded.model, loaded.tokenizer, args.template, config)
        else:
            result = infill(loaded.model, loaded.tokenizer, args.template, config, options=options, step_callback=live)
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    if args.json:
        out = result.as_dict()
        out["seconds"] = round(seconds, 4)
        out["config"] = dataclasses.asdict(config)
        print(json.dumps(out, ensure_ascii=False, allow_nan=True))
        return 0
    print(result.text)
    lengths = ", ".join(f"{g.name}: {len(g.tokens)}" for g in result.gaps)
    print(f"{len(result.gaps)} gaps ({lengths}), {result.nfe} NFE in {seconds:.2f} s", file=sys.stderr)
    return 0
