"""Decoding in float32 or 16-bit weights: speed and quality, side by side in one process.

A checkpoint is stored in float32; ``--dtype`` on the decoding commands (``unmask.load(...,
dtype=)`` in Python) runs it in ``bfloat16`` or ``float16`` instead. Whether that pays depends
on the machine and on the decoder's forward width: a masked-diffusion step runs the model over
the whole block or canvas (tens to hundreds of positions, compute-bound), an autoregressive
step over one position per row (bound by the cost per operation). On a CPU with AMX, a
bfloat16 matrix product costs about the same at 1 and at 256 rows, and more than float32 at
1 to 4 rows.

For each model and generation length this decodes the same held-out prompts (those of
``benchmarks/defaults.py``: ``--data``'s validation split, or ``--prompt-source
corpus-tail``, training text, as the committed results were measured) with the checkpoint's
recommended sampling options (what a user with no flags gets: ``api.sample_config``) in
each dtype, interleaving the dtypes in every repeat, and reports per dtype: tokens/s (the
fastest of ``--repeats`` runs of all prompts; an ``ar`` row counts its text, cut at EOS, a
diffusion row decodes every position) and ``speedup``, its ratio to fp32's (to the
first dtype without fp32), the share of generated tokens equal to fp32's, and the quality
columns of ``benchmarks/defaults.py`` (gen ppl under the offline scorer, per-text
distinct-2, unigram entropy, repeated word 4-grams).

    python benchmarks/precision.py [--models demo runs/ar ...] [--dtypes fp32 bf16]
                                   [--prompts 64] [--batch 8] [--gen-lengths 64]
                                   [--repeats 3] [--threads 1] [--no-score] [--json OUT]
                                   [--bound DATA [--bound-seeds 1234 1 2]]

``--bound DATA`` adds the held-out bound of each model in each dtype (``unmask eval``'s
number: the validation split of a prepared corpus, whole, windows of ``--bound-seq-len``),
with the same noise seeds for every dtype, so that a difference is the dtype's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import generated, output_file, positive_int, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/defaults.py

from defaults import add_prompt_args, prompt_pairs, quality  # noqa: E402

from unmask import api  # noqa: E402
from unmask.api import cpu_has_bf16_matmul, load_for_decoding  # noqa: E402
from unmask.config import DECODE_DTYPES  # noqa: E402


def _decode_all(m: Any, prompts: list[str], cfg: Any, batch: int) -> tuple[list[list[int]],
                                                                          list[str], float]:
    ids: list[list[int]] = []
    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        out = api.generate(m, prompts[i:i + batch], config=cfg)
        ids += out.ids
        texts += out.texts
    return ids, texts, time.perf_counter() - t0


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=False))
    return same / max(1, sum(len(r) for r in a))


def _bounds(name: str, models: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The held-out bound of one checkpoint in each dtype, per noise seed (the same seeds for
    every dtype: the differences are the dtype's, not the Monte Carlo noise's)."""
    from unmask.data import TokenDataset
    from unmask.evaluate import evaluate_loss
    from unmask.facts import ModelFacts

    data = TokenDataset(args.bound, "val")
    out = []
    for seed in args.bound_seeds:
        row: dict[str, Any] = {"model": name, "seed": seed}
        for d, m in models.items():
            r = evaluate_loss(m.model, data, objective=ModelFacts.of(m.config).objective,
                              seq_len=args.bound_seq_len, max_batches=None, seed=seed)
            row[d] = r.bpb
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["demo"],
                    help="checkpoints (run folders, checkpoint folders or demo)")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"],
                    choices=[d for d in DECODE_DTYPES if d != "auto"])
    ap.add_argument("--prompts", type=positive_int, default=64, help="held-out prompts")
    ap.add_argument("--prompt-words", type=positive_int, default=12)
    add_prompt_args(ap)
    ap.add_argument("--batch", type=positive_int, default=8, help="rows per generate call")
    ap.add_argument("--gen-lengths", type=positive_int, nargs="+", default=[64])
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="timed runs per dtype (fastest wins)")  # fmt: skip
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--no-score", action="store_true", help="skip the SmolLM2 scorer")
    ap.add_argument("--bound", metavar="DATA", default=None,
                    help="also the held-out bound (bits/byte) of each model in each dtype on "
                    "the validation split of this prepared corpus, with the same noise seeds")
    ap.add_argument("--bound-seeds", type=int, nargs="+", default=[1234, 1, 2])
    ap.add_argument("--bound-seq-len", type=positive_int, default=256)
    ap.add_argument("--json", type=output_file, default=None, help="write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scorer = None
    if not args.no_score:
        from unmask.scoring import ReferenceScorer

        scorer = ReferenceScorer.from_smollm2()

    rows: list[dict[str, Any]] = []
    source = ""
    bounds: list[dict[str, Any]] = []
    for name in args.models:
        models = {d: load_for_decoding(name, dtype=d) for d in args.dtypes}
        if args.bound:
            bounds += _bounds(name, models, args)
        ref = "fp32" if "fp32" in args.dtypes else args.dtypes[0]  # the ratios' reference
        first = models[ref]
        for G in args.gen_lengths:
            pairs, source = prompt_pairs(args, args.prompts, G)
            prompts = [p for p, _ in pairs]
            cfg = api.sample_config(first, {"gen_length": G})
            best: dict[str, float] = {d: float("inf") for d in args.dtypes}
            outs: dict[str, tuple[list[list[int]], list[str]]] = {}
            for d in args.dtypes:  # untimed: first-call costs (allocations, RoPE tables)
                _decode_all(models[d], prompts[: args.batch], cfg, args.batch)
            for _ in range(args.repeats):
                for d in args.dtypes:  # interleaved: a busy spell hits every dtype alike
                    ids, texts, dt = _decode_all(models[d], prompts, cfg, args.batch)
                    best[d] = min(best[d], dt)
                    outs[d] = (ids, texts)
            ref_ids, decoder, eos = outs[ref][0], api.choose(first, cfg), first.config.eos_id
            rate = {d: sum(generated(r, eos) if decoder == "ar" else len(r)  # an ar row's
                           for r in outs[d][0]) / best[d]  # text; diffusion decodes all
                    for d in args.dtypes}  # fmt: skip
            for d in args.dtypes:
                ids, texts = outs[d]
                row = {"model": name, "gen_length": G, "dtype": d, "decoder": decoder,
                       "tok_s": rate[d], "speedup": rate[d] / rate[ref],
                       "token_agreement": _agreement(ref_ids, ids),
                       **quality(texts, prompts, first.tokenizer, scorer)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    cols = ["tok_s", "speedup", "token_agreement", "gen_ppl", "dist2", "entropy", "rep4"]
    cols = [c for c in cols if scorer is not None or c != "gen_ppl"]
    print(f"| model | gen | decoder | dtype | {' | '.join(cols)} |")
    print("|---|---:|---|---|" + "---:|" * len(cols))
    for r in rows:
        vals = [f"{r[c]:.3f}" if c not in ("tok_s", "gen_ppl") else f"{r[c]:.1f}" for c in cols]
        print(f"| {r['model']} | {r['gen_length']} | {r['decoder']} | {r['dtype']} | "
              + " | ".join(vals) + " |")
    for b in bounds:
        print(f"held-out bound, {b['model']}, seed {b['seed']}: "
              + ", ".join(f"{d} {b[d]:.4f}" for d in args.dtypes) + " bits/byte")
    if args.json:
        out = {"rows": rows, "bounds": bounds, "prompts": args.prompts, "prompt_source": source,
               "dist2": "per text (mean of each text's distinct-2)", "batch": args.batch,
               "threads": args.threads, "repeats": args.repeats,
               "machine": platform.processor() or platform.machine(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "cpu_bf16_matmul": cpu_has_bf16_matmul(), "torch": torch.__version__}
        write_results(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
