"""``unmask convert SRC DST``: a publisher's folder (LLaDA, LLaDA-MoE, LLaDA 2.x, Dream, MDLM,
SEDD, BD3-LM; docs/models.md) -> a native unmask checkpoint;
with ``--to FAMILY``, a native checkpoint -> that family's publisher layout, and with
``--to transformers`` a folder that Hugging Face ``transformers`` loads
(``trust_remote_code=True``; the modeling code is written into it).

The source is a local Hugging Face folder (config.json, *.safetensors shards,
tokenizer.json); unmask never downloads. The result loads with ``unmask.load`` and
``--model DST`` like any checkpoint trained here. See docs/models.md.
"""

from __future__ import annotations

import argparse
import sys

from unmask.commands import COMMANDS, model_choice, registry_choice


def _families() -> list[str]:
    from unmask.convert import IMPORTERS

    return sorted(IMPORTERS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help=COMMANDS["convert"],
        description=(
            "Import a local folder in the publisher's format (config.json with model_type, "
            "model.safetensors or shards with model.safetensors.index.json, tokenizer.json) "
            "and write a native unmask checkpoint folder (config.json, model.safetensors, "
            "tokenizer.json). SRC may also be a native checkpoint, to store it in another "
            "--dtype. With --to, export a native checkpoint instead (to a publisher's layout, "
            "or --to transformers for Hugging Face transformers). Supported families: see "
            "docs/models.md."
        ),
    )
    p.add_argument(
        "src", metavar="SRC", type=model_choice,
        help="publisher folder (download it first; unmask never downloads) or native checkpoint",
    )
    p.add_argument(
        "dst", metavar="DST",
        help="output folder (must not exist or be empty, nor be the working folder, nor lie "
             "inside SRC's model folder)",
    )
    p.add_argument(
        "--dtype",
        type=registry_choice("dtype", ("bf16", "fp16", "fp32")),
        metavar="bf16|fp16|fp32",
        default=None,
        help="dtype of the written weights, bf16, fp16 or fp32 (default: as stored: a "
             "publisher folder's torch_dtype, else its shards', a native checkpoint's weights)",
    )
    p.add_argument(
        "--to",
        type=registry_choice("family", _families),
        default=None,
        metavar="FAMILY",
        help=(
            "export instead: SRC is a native checkpoint, DST is written in this family's "
            "layout (dream, llada, llada-moe; mdlm, sedd, bd3lm and llada2 are import only); "
            "transformers "
            "writes a folder that "
            "transformers' AutoModelForMaskedLM / AutoModel / AutoTokenizer load with "
            "trust_remote_code=True (its modeling code included)"
        ),
    )
    p.set_defaults(func=run, model_given_as="the folder to convert is convert's first word: "
                                            "unmask convert {model} DST")


def run(args: argparse.Namespace) -> int:
    from unmask.convert import convert, export, parse_dtype

    dtype = parse_dtype(args.dtype)
    if args.to is not None:
        out = export(args.src, args.dst, family=args.to, dtype=dtype)
    else:
        out = convert(args.src, args.dst, dtype=dtype)
    print(f"wrote {out}", file=sys.stderr)
    return 0
