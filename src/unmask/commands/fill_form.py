"""``unmask fill-form``: fill a JSON template with typed holes (see docs/infill.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from unmask.commands import check_model_exists
from unmask.commands.infill import add_common_flags, live_view, load_model, refuse_gen_length
from unmask.commands.sample_options import sample_config_from_args, with_seed
from unmask.errors import UserError
from unmask.files import read_user_stdin, require_stdout
from unmask.messages import plural
from unmask.terminal import json_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fill-form",
        help="fill a JSON template with typed holes",
        description=(
            'Fill a JSON template whose values are typed holes, e.g. {"name": "<text:2-8>", '
            '"age": "<int:0..120>", "pin": "<digits:4>", "city": "<choice:Paris|London|Rome>"} '
            "(also <bool>, <float>, <float:0..1>, <regex:...>). Counts are characters: "
            "<text:2-8> is 2 to 8 characters, <digits:1-3> an integer of 1 to 3 digits; LO..HI "
            "is a value range: <int:1..12> is a number from 1 to 12 (<int:1-3> is refused as "
            "ambiguous). All holes are filled in one pass (on a causal checkpoint: left to right "
            "under the same constraints); the output always parses as JSON. "
            "With --schema SCHEMA instead of a template, the output validates against that "
            "JSON Schema (see docs/infill.md). --gen-length is refused: the holes' types set the "
            "lengths."
        ),
    )
    p.add_argument("template", metavar="TEMPLATE", nargs="?",
                   help="template file ('-' = stdin), or the JSON itself")
    p.add_argument("--schema", metavar="SCHEMA",
                   help="a JSON Schema file ('-' = stdin), or the JSON itself, instead of a "
                   "template: types, enum, const, required, string lengths/pattern/format, "
                   "numeric minimum/maximum, nested objects, arrays with bounded sizes")
    add_common_flags(p)
    p.set_defaults(func=run, check_flags=check_flags)


def _read(arg: str, what: str = "template") -> tuple[str, str]:
    """(the text of a template or schema argument, its name for messages): stdin for ``-``,
    a file's text, or the argument itself when it is JSON (any JSON value: ``true`` is a
    schema, ``"<int>"`` a template) or starts like a JSON object or array (the parser then
    says what is wrong where)."""
    if arg == "-":
        return read_user_stdin(f"unmask fill-form: reading the {what}"), "<stdin>"
    if not arg.strip():  # Path("") is the current folder: "'': a folder, not a template file"
        raise UserError(f"the {what} is empty (give a {what} file, '-' for stdin, or the "
                        "JSON itself)")
    path = Path(arg)
    try:  # a file, or what reads as one: /dev/stdin, a shell's <(...), a FIFO
        is_file = path.exists() and not path.is_dir()
    except OSError:  # a name too long for a path (inline JSON of 256+ bytes): not a file
        is_file = False
    if is_file:
        from unmask.files import read_user_text

        return read_user_text(path, what), str(path)
    if arg.lstrip().startswith(("{", "[")):
        return arg, what
    try:
        json.loads(arg)
        return arg, what  # any JSON value
    except RecursionError:  # JSON nested too deep: the parser says so
        return arg, what
    except ValueError:  # not JSON
        pass
    if path.is_dir():
        raise UserError(f"{arg}: a folder, not a {what} file")
    raise UserError(
        f"{arg}: no such file (give a {what} file, '-' for stdin, or the JSON itself)"
    )


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads: such a
    mistake took seconds), what is wrong whatever the model: not exactly one of TEMPLATE and
    ``--schema``, ``--gen-length``, the sampling options ``SampleConfig`` refuses, a template
    or schema file that is not there (a mistyped name: ``_read``'s line; a file that is
    there, or stdin, is read once, in ``run``), a ``--model`` that names nothing (with a
    template; a schema's own refusals, which need torch, come first, as before)."""
    if (args.template is None) == (args.schema is None):
        raise UserError("give a TEMPLATE or --schema SCHEMA (exactly one)")
    refuse_gen_length(args, "fill_form")
    sample_config_from_args(args)
    given, what = (args.template, "template") if args.schema is None else (args.schema, "schema")
    if given != "-" and (not os.path.exists(given) or os.path.isdir(given)):
        _read(given, what)  # JSON itself (nothing read), or the refusal of what it names
    if args.schema is None:
        check_model_exists(args)


def run(args: argparse.Namespace) -> int:
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    require_stdout("the filled form")
    from unmask import api
    from unmask.commands import given_fields
    from unmask.config import SampleConfig
    from unmask.infill import parse_form
    from unmask.infill.fill import _max_seq_len
    from unmask.infill.schema import check_schema, load_schema, schema_form

    config = with_seed(sample_config_from_args(args))  # a sampled run reports its seed
    if args.schema is None:
        text, source = _read(args.template)
    else:
        text, source = _read(args.schema, "schema")
    if args.schema is not None:
        check_schema(load_schema(text, source))  # unenforceable keywords before loading
    loaded = load_model(args)
    if args.schema is not None:
        schema_form(text, loaded.tokenizer, source=source,  # schema errors before sampling
                    context=_max_seq_len(loaded.model))
    else:
        # template errors before sampling
        parse_form(text, loaded.tokenizer, source=source, max_seq_len=_max_seq_len(loaded.model))
    live = live_view(args, loaded.tokenizer)
    t0 = time.perf_counter()
    try:
        # through the API entry, as the server: a checkpoint that cannot fill forms is refused
        form = {"schema": text} if args.schema is not None else {"template": text}
        # the options given (a dict, as infill): a causal checkpoint checks steps at the form
        given = {**given_fields(SampleConfig, args), "seed": config.seed}
        result = api.fill_form(loaded, **form, config=given, step_callback=live,
                               source=source).detail
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    if args.json:
        holes = [
            {
                "path": h.path,
                "spec": h.spec,
                "kind": h.kind,
                "width": h.width,
                "text": h.text,
                "value": h.value,
            }
            for h in result.holes
        ]
        out = {
            "value": result.value,
            "text": result.text,
            "holes": holes,
            "nfe": result.nfe,
            "repaired": result.repaired,
            "seconds": round(seconds, 4),
            "config": dataclasses.asdict(config),
        }
        print(json_text(out))
        return 0
    print(json_text(result.value, indent=2))  # result.pretty(), no raw C1 control
    print(f"{plural(len(result.holes), 'hole')}, {result.nfe} NFE in {seconds:.2f} s",
          file=sys.stderr)
    return 0
