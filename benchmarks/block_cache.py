"""Block diffusion (``bd3lm``) under a KV cache: each block started from the last block's
cache, side by side with the old refresh of the whole canvas at every block's first call.

Under block-causal attention whose blocks are the run's, a finished block's keys and values
never change, so ``BlockRun`` hands each block's cache to the next (``WindowCache.carry``)
and a block's first call runs the last block and itself, not the prompt and every finished
block again. The old path is kept here (``Refresh``: a block's first call with no carried
cache, a full forward), run in turns with the new one on the same random block-causal model
of the demo's shape (untrained: the tokens, not their quality, are compared), one token a
step, CPU time of the process, median of ``--repeats``, each path first in every other
repeat. The tokens must be identical.

    python benchmarks/block_cache.py [--lengths 64 256] [--repeats 3] [--threads 1]
    python benchmarks/block_cache.py --quick   # does it run?
"""

from __future__ import annotations

import argparse

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

from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.blocks import BlockRun


class Refresh(BlockRun):
    """The path before 2026-12-07: every block's first call refreshes the whole canvas."""

    def _carry(self, inner: object) -> None:
        return None


def main() -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=positive_int, nargs="+",
                    help="generated tokens (default: 64 256; --quick: 16)")
    ap.add_argument("--block-size", type=positive_int, default=4)
    ap.add_argument("--cache", choices=("prefix", "dual"), default="prefix")
    ap.add_argument("--repeats", type=positive_int, help="(default: 3; --quick: 1)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_file, help="also write the rows here")
    ap.add_argument("--quick", action="store_true", help="a tiny model, one short run")
    args = ap.parse_args()
    fill_defaults(args, {"lengths": [64, 256], "repeats": 3}, {"lengths": [16], "repeats": 1})
    torch.set_num_threads(args.threads)
    bs = args.block_size
    if any(n % bs for n in args.lengths):
        from unmask.errors import UserError

        raise UserError(f"--lengths must be multiples of --block-size {bs}")
    prompt = list(range(5, 37))
    preset = "tiny" if args.quick else "demo"
    cfg = model_preset(preset, vocab_size=4096, attention="block-causal", block_size=bs,
                       max_seq_len=max(args.lengths) + len(prompt) + bs)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    print(f"torch {torch.__version__}, threads {args.threads}, {preset} shape, block-causal "
          f"blocks of {bs}, cache {args.cache}, one token a step, CPU seconds (median of "
          f"{args.repeats})")
    print(f"{'gen':>5} {'refresh s':>10} {'carry s':>9} {'ratio':>6}  tokens")
    warm = SampleConfig(gen_length=bs, steps=bs, cache=args.cache)
    for cls in (Refresh, BlockRun):  # first calls pay for allocations: not timed
        cls(model, [prompt], warm, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None).run()

    rows = []
    for n in args.lengths:
        sample = SampleConfig(gen_length=n, steps=n, cache=args.cache)
        calls = [  # in turns, each first in every other repeat (``round_robin``)
            lambda cls=cls, sample=sample: cls(model, [prompt], sample, mask_id=cfg.mask_id,
                                               pad_id=cfg.pad_id, eos_id=None).run().tokens
            for cls in (Refresh, BlockRun)
        ]
        (refreshed, old), (carried, new) = round_robin(calls, args.repeats, cpu_clock)
        same = torch.equal(refreshed, carried)
        rows.append({"gen_length": n, "refresh_s": old, "carry_s": new, "ratio": old / new,
                     "identical": same})
        print(f"{n:>5} {old:>10.3f} {new:>9.3f} {old / new:>5.2f}x  "
              f"{'identical' if same else 'DIFFER'}")
    if args.json:
        write_results(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    run(main)
