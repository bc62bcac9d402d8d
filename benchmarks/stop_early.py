"""Stop sequences that end decoding, side by side with the path before 2026-12-07 (every
forward of ``gen_length`` run, the text cut afterwards), on demo-size models.

``ar``: a causal model of the demo's size (random weights, seeded: the work per token is the
demo's; greedy texts are what a model writes, not words), one prompt a row, each with a stop
sequence it meets early (the row's own text from ``--stop-at`` characters on, as a user whose
stop is hit early). ``llada``: the shipped demo checkpoint with ``block_length`` 32, stopping
at the block boundary after the stop. ``ar seg`` and ``llada seg``: the same in segments
(``segment_length`` a quarter of ``gen_length``, whole blocks of 32; until 2026-12-07 a
segmented run went on to its end whatever the check said). The old path is the same call
with the check switched off (``StopRows`` answering that no row has a stop), run in turns
with the new one. Reports forwards (NFE), CPU seconds (median of ``--repeats``) and whether
texts are identical.

    python benchmarks/stop_early.py [--gen-length 250] [--prompts 4]
    python benchmarks/stop_early.py --quick   # does it run?
"""

from __future__ import annotations

import argparse
import dataclasses
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
from eos_stop import prompts_from_corpus


def main() -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen-length", type=positive_int, help="(default: 250; --quick: 32)")
    ap.add_argument("--prompts", type=positive_int, help="(default: 4; --quick: 2)")
    ap.add_argument("--stop-at", type=positive_int, default=8,
                    help="each row's stop: its own text from this character on (default: 8)")
    ap.add_argument("--repeats", type=positive_int, help="(default: 3; --quick: 1)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_file, help="also write the rows here")
    ap.add_argument("--quick", action="store_true", help="short runs")
    args = ap.parse_args()
    fill_defaults(args, {"gen_length": 250, "prompts": 4, "repeats": 3},
                  {"gen_length": 32, "prompts": 2, "repeats": 1})
    torch.set_num_threads(args.threads)
    from unmask import api
    from unmask.checkpoint import Loaded
    from unmask.files import asset_path
    from unmask.model import Transformer
    from unmask.sampling.stops import StopRows

    demo = api.load_for_decoding(str(asset_path("demo")))
    torch.manual_seed(0)
    cfg = dataclasses.replace(demo.config, attention="causal", objective="ar", max_seq_len=512)
    causal = Loaded(model=Transformer(cfg).eval(), tokenizer=demo.tokenizer, config=cfg,
                    path=demo.path)
    prompts = prompts_from_corpus(args.prompts, 12)
    on = StopRows.__bool__

    def decode(m: Loaded, config: dict[str, Any], stops: list[str] | None, new: bool) -> Any:
        StopRows.__bool__ = on if new else (lambda self: False)  # type: ignore[method-assign]
        try:
            return [api.generate(m, [p], config=config, stop=None if stops is None else [s])
                    for p, s in zip(prompts, stops or [None] * len(prompts), strict=True)]
        finally:
            StopRows.__bool__ = on  # type: ignore[method-assign]

    seg = max(32, args.gen_length // 4 // 32 * 32)  # segments: whole blocks of 32
    cases = [("ar", causal, {"decoder": "ar", "gen_length": args.gen_length}),
             ("llada", demo, {"gen_length": min(args.gen_length, 224), "block_length": 32}),
             ("ar seg", causal, {"decoder": "ar", "gen_length": args.gen_length,
                                 "segment_length": seg}),
             ("llada seg", demo, {"gen_length": args.gen_length // 32 * 32 or 32,
                                  "block_length": 32, "segment_length": seg})]
    print(f"torch {torch.__version__}, threads {args.threads}, {len(prompts)} prompts, one a "
          f"run, stop at character {args.stop_at} of each text, CPU seconds (median of "
          f"{args.repeats})")
    print(f"{'decoder':>9} {'gen':>4} {'NFE old':>8} {'NFE new':>8} {'old s':>7} {'new s':>7} "
          f"{'ratio':>6}  texts")
    rows = []
    for name, m, config in cases:
        full = decode(m, config, None, True)
        stops = [o.texts[0][args.stop_at : args.stop_at + 3] or "\x00" for o in full]
        (old_out, old), (new_out, new) = round_robin(
            [lambda m=m, c=config, s=stops: decode(m, c, s, False),
             lambda m=m, c=config, s=stops: decode(m, c, s, True)], args.repeats, cpu_clock)
        same = [o.texts for o in old_out] == [o.texts for o in new_out]
        counts = [o.n_tokens for o in old_out] == [o.n_tokens for o in new_out]
        nfe_old, nfe_new = sum(o.nfe for o in old_out), sum(o.nfe for o in new_out)
        rows.append({"decoder": name, "gen_length": config["gen_length"], "nfe_old": nfe_old,
                     "nfe_new": nfe_new, "old_s": old, "new_s": new, "ratio": old / new,
                     "identical": same, "same_token_counts": counts})
        print(f"{name:>9} {config['gen_length']:>4} {nfe_old:>8} {nfe_new:>8} {old:>7.2f} "
              f"{new:>7.2f} {old / new:>5.2f}x  {'identical' if same else 'DIFFER'}"
              f"{'' if counts else ' (token counts differ)'}")
    if args.json:
        write_results(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    run(main)
