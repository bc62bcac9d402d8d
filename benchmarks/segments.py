"""Which ``segment_length``: text past the model's context, one model, segments of several
lengths side by side (docs/sampling.md, "Longer than the context").

Each row writes ``--gen-length`` tokens after the same prompts with the checkpoint's own
decoder in segments of N tokens (each seeing the latest ``max_seq_len - N``), and reports
segments, NFE, tokens/s, gen ppl (SmolLM2, when the ``score`` extra is installed), unigram
entropy and distinct-2, for the whole text and for its part past the first segment.

    python benchmarks/segments.py --model demo --gen-length 512 --segments 32 64 128 192 224 \\
        --block-length 32 --cache dual --json benchmarks/results/segments_which_n_demo.json
    python benchmarks/segments.py --quick   # does it run?
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import fill_defaults, json_text, output_file, positive_int

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoding import prompt_texts  # noqa: E402

from unmask import api  # noqa: E402
from unmask.checkpoint import load  # noqa: E402
from unmask.config import SampleConfig  # noqa: E402
from unmask.evaluate import distinct_n, unigram_entropy  # noqa: E402
from unmask.sampling import cut_at_eos  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo", help="checkpoint (demo = the shipped one)")
    ap.add_argument("--gen-length", type=positive_int, default=None,
                    help="(default: 512; --quick: 48)")
    ap.add_argument("--segments", type=positive_int, nargs="+", default=None,
                    help="(default: 32 64 128 192 224; --quick: 16 32)")
    ap.add_argument("--block-length", type=int, default=None)
    ap.add_argument("--cache", default="none")
    ap.add_argument("--policy", default="llada")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=positive_int, default=None,
                    help="prompts (default: 4; --quick: 2)")
    ap.add_argument("--prompt-words", type=positive_int, default=8)
    ap.add_argument("--repeats", type=positive_int, default=1,
                    help="timed runs per row (fastest kept)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--score", action="store_true", default=None,
                    help="gen ppl under SmolLM2 (the default, but for --quick)")
    ap.add_argument("--no-score", action="store_true", help="skip gen ppl")
    ap.add_argument("--json", type=output_file, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="defaults for a smoke run: gen 48, segments 16 and 32, 2 prompts, no "
                    "scoring (flags given still win)")
    args = ap.parse_args(argv)
    fill_defaults(args, normal={"gen_length": 512, "segments": [32, 64, 128, 192, 224],
                                "batch": 4, "score": True},
                  quick={"gen_length": 48, "segments": [16, 32], "batch": 2, "score": False})
    args.no_score = args.no_score or not args.score
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load(args.model)
    loaded.model.eval()
    tok, eos = loaded.tokenizer, loaded.config.eos_id
    prompts = prompt_texts(args.batch, args.prompt_words)
    ids = [tok.encode(p) for p in prompts]
    scorer = None
    if not args.no_score:
        from unmask.scoring import ReferenceScorer

        scorer = ReferenceScorer.from_smollm2()
    base = dict(gen_length=args.gen_length, steps=args.gen_length, cache=args.cache,
                block_length=args.block_length, policy=args.policy, threshold=args.threshold,
                temperature=args.temperature, seed=args.seed)  # fmt: skip
    n0 = min(args.segments)  # the warm-up: one short segment (first calls pay one-time costs)
    warm = SampleConfig(**{**base, "gen_length": n0, "steps": n0, "block_length": None,
                           "segment_length": n0})
    api.start(loaded, ids, warm).run()
    rows: list[dict[str, Any]] = []
    print(f"{'N':>4} {'window':>6} {'segs':>4} {'NFE':>5} {'tok/s':>7} {'gen ppl':>7} "
          f"{'entropy':>7} {'dist-2':>6} {'ppl>1st':>7} {'d2>1st':>6}")
    for n in args.segments:
        config = SampleConfig(**base, segment_length=n)
        best = float("inf")
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            res = api.start(loaded, ids, config).run()
            best = min(best, time.perf_counter() - t0)
        gen = [cut_at_eos(r, eos) for r in res.gen_ids]
        texts = [tok.decode(r) for r in gen]
        first = min(n, args.gen_length)  # the part past the first segment, its own prompt
        heads = [p + tok.decode(r[:first]) for p, r in zip(prompts, gen, strict=True)]
        tails = [tok.decode(r[first:]) for r in gen]

        def ppl(t: list[str], p: list[str]) -> float | None:
            return scorer.perplexity(t, prompts=p) if scorer is not None else None

        row = {
            "segment_length": n, "window": loaded.config.max_seq_len - n,
            "segments": len(res.segments or [res]), "nfe": res.nfe, "seconds": best,
            "tokens_per_s": sum(len(r) for r in gen) / best,
            "gen_ppl": ppl(texts, prompts), "entropy": unigram_entropy(gen),
            "distinct_2": distinct_n(texts, 2),
            "gen_ppl_after_first": ppl(tails, heads) if any(tails) else None,
            "distinct_2_after_first": distinct_n(tails, 2) if any(tails) else None,
            "texts": texts,
        }  # fmt: skip
        rows.append(row)

        def f(v: float | None, w: int, d: int) -> str:
            return f"{v:>{w}.{d}f}" if v is not None else f"{'n/a':>{w}}"

        print(f"{n:>4} {row['window']:>6} {row['segments']:>4} {res.nfe:>5} "
              f"{f(row['tokens_per_s'], 7, 1)} {f(row['gen_ppl'], 7, 2)} "
              f"{f(row['entropy'], 7, 3)} {f(row['distinct_2'], 6, 3)} "
              f"{f(row['gen_ppl_after_first'], 7, 2)} {f(row['distinct_2_after_first'], 6, 3)}",
              flush=True)
    if args.json:
        out = {"argv": sys.argv[1:], "prompts": prompts, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json_text(out, indent=1))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    from _common import run

    run(main)
