"""The commit loop's stop after EOS, side by side with decoding every block (the path before
2026-12-07), on a checkpoint with its own recommended sampling options.

At a block boundary, a row whose finished blocks hold EOS has ended; once every row has, the
run stops (docs/sampling.md, "Blocks"). The old path is kept here (``Denoiser._all_ended``
answering no), run in turns with the new one on the same prompts: a line of the packaged
corpus each, its first ``--prompt-words`` words, batch 1 (``--batch 1``) or all prompts in
one batch. Reports forwards (NFE), CPU seconds (median of ``--repeats``, each path first in
every other repeat) and whether the texts are identical (they must be).

    python benchmarks/eos_stop.py [--model src/unmask/assets/demo] [--gen-length 224]
    python benchmarks/eos_stop.py --quick   # does it run?
"""

from __future__ import annotations

import argparse
import gzip
import random
from typing import Any

import torch
from _common import (
    cpu_clock,
    fill_defaults,
    output_file,
    positive_int,
    round_robin,
    run,
    write_results,
)


def prompts_from_corpus(n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` lines of the packaged corpus (seeded choice among lines of more than ``words``
    words), each cut to its first ``words`` words."""
    from unmask.files import asset_path

    with gzip.open(asset_path("web-bible.txt.gz"), "rt", encoding="utf-8") as f:
        lines = [line.split() for line in f if len(line.split()) > words]
    chosen = random.Random(seed).sample(lines, n)
    return [" ".join(line[:words]) for line in chosen]


def main() -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a checkpoint (default: the shipped demo model)")
    ap.add_argument("--gen-length", type=positive_int, help="(default: 224; --quick: 32)")
    ap.add_argument("--prompts", type=positive_int, help="(default: 8; --quick: 2)")
    ap.add_argument("--prompt-words", type=positive_int, default=12)
    ap.add_argument("--batches", type=positive_int, nargs="+", help="(default: 1 8)")
    ap.add_argument("--repeats", type=positive_int, help="(default: 3; --quick: 1)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_file, help="also write the rows here")
    ap.add_argument("--quick", action="store_true", help="short runs")
    args = ap.parse_args()
    fill_defaults(args, {"gen_length": 224, "prompts": 8, "repeats": 3, "batches": [1, 8]},
                  {"gen_length": 32, "prompts": 2, "repeats": 1, "batches": [1, 2]})
    torch.set_num_threads(args.threads)
    from unmask import api
    from unmask.files import asset_path
    from unmask.sampling.loop import Denoiser

    args.model = args.model or str(asset_path("demo"))
    loaded = api.load_for_decoding(args.model)
    prompts = prompts_from_corpus(args.prompts, args.prompt_words)
    new_ended = Denoiser._all_ended

    def decode(stop: bool, rows: list[str]) -> Any:
        Denoiser._all_ended = new_ended if stop else (lambda self: False)  # type: ignore
        try:
            return api.generate(loaded, rows, config={"gen_length": args.gen_length})
        finally:
            Denoiser._all_ended = new_ended  # type: ignore


    decode(True, prompts[:1])  # first calls pay for allocations: not timed
    print(f"torch {torch.__version__}, threads {args.threads}, {args.model}, gen "
          f"{args.gen_length}, {len(prompts)} prompts of {args.prompt_words} words, the "
          f"checkpoint's options, CPU seconds (median of {args.repeats})")
    print(f"{'batch':>5} {'NFE all':>8} {'NFE stop':>9} {'all s':>7} {'stop s':>7} {'ratio':>6}"
          "  texts")
    rows = []
    for batch in args.batches:
        groups = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]

        def every(stop: bool, groups: list[list[str]] = groups) -> list[Any]:
            return [decode(stop, g) for g in groups]

        (old_out, old), (new_out, new) = round_robin(
            [lambda: every(False), lambda: every(True)], args.repeats, cpu_clock)
        same = [t for o in old_out for t in o.texts] == [t for o in new_out for t in o.texts]
        nfe_old = sum(o.nfe for o in old_out)
        nfe_new = sum(o.nfe for o in new_out)
        rows.append({"batch": batch, "nfe_all": nfe_old, "nfe_stop": nfe_new, "all_s": old,
                     "stop_s": new, "ratio": old / new, "identical": same})
        print(f"{batch:>5} {nfe_old:>8} {nfe_new:>9} {old:>7.2f} {new:>7.2f} {old / new:>5.2f}x"
              f"  {'identical' if same else 'DIFFER'}")
    if args.json:
        write_results(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    run(main)
