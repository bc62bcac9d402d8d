"""Gradient guidance of embedding diffusion (``--guide-words``) at several ``--guide-scale``s.

Trains a small ``embed-diffusion`` model (or takes ``--model``: an ``embed-diffusion`` or a
``latent-diffusion`` checkpoint), then samples ``--n`` continuations of ``--prompt`` per scale
(0 = no guidance; a latent model takes no prompt and samples whole windows) and reports how
many samples hold every guide word, the share of generated tokens that are one of them, the
samples' unigram entropy (repetition shows as a drop) and the NFE. A guided step costs two
model calls; ``--equal-nfe`` gives the guided rows half the steps, so every row has the same
budget of model calls.

    python benchmarks/guidance.py --data data/bible          # trains 300 tiny steps
    python benchmarks/guidance.py --model runs/embed --scales 0,0.02,0.1
    python benchmarks/guidance.py --model runs/latent --equal-nfe --words "LORD, God"

Prints a table and writes ``--json`` (default ``runs/bench/guidance.json``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import (
    default_output,
    non_negative_floats,
    output_file,
    positive_int,
    write_results,
)

from unmask import api
from unmask.checkpoint import load
from unmask.config import SampleConfig, TrainConfig
from unmask.evaluate import unigram_entropy
from unmask.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="an embed-diffusion checkpoint (else one is trained)")
    ap.add_argument("--data", default="data/bible", help="prepared dataset to train on")
    ap.add_argument("--steps", type=positive_int, default=None,
                    help="training steps (default: 300; refused with --model, which trains "
                    "nothing: --sample-steps sets the decoding steps)")
    ap.add_argument("--words", default="Moses, Israel", help="guide words, comma-separated")
    ap.add_argument("--prompt", default="And the LORD said")
    ap.add_argument("--scales", type=non_negative_floats("a guide scale"),
                    default="0,0.01,0.02,0.05,0.2", help="guide scales to try, comma-separated")
    ap.add_argument("--n", type=positive_int, default=16, help="samples per scale (default: 16)")
    ap.add_argument("--gen-length", type=positive_int, default=32)
    ap.add_argument("--sample-steps", type=positive_int, default=32)
    ap.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="rounding temperature (default: the checkpoint's recommendation)",
    )
    ap.add_argument(
        "--equal-nfe",
        action="store_true",
        help="guided rows get half the steps (the same model calls as unguided)",
    )
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_file, default=str(default_output("guidance.json")),
                    help="write the results here (default: runs/bench/guidance.json)")
    args = ap.parse_args()
    if args.model and args.steps is not None:
        from unmask.errors import UserError

        raise UserError("--steps trains the tiny model; with --model nothing is trained "
                        "(--sample-steps sets the decoding steps)")
    args.steps = args.steps or 300
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="unmask-guidance-") as tmp:
        run = args.model
        if run is None:
            cfg = TrainConfig(
                data=args.data, out=str(Path(tmp) / "embed"), preset="tiny",
                objective="embed-diffusion", seq_len=64, batch_size=16, steps=args.steps,
                lr=2e-3, warmup=30, eval_every=0, eval_batches=2, save_every=0, log_every=10,
                seed=0, threads=args.threads,
            )  # fmt: skip
            run = str(train(cfg, progress=False))
        loaded = load(run)
        latent = loaded.config.objective == "latent-diffusion"  # samples whole windows
        prompt = "" if latent else args.prompt
        recommended = loaded.config.sample_defaults.get("temperature", 0.0)
        temperature = recommended if args.temperature is None else args.temperature
        words = [w.strip() for w in args.words.split(",") if w.strip()]
        ids = {w: loaded.tokenizer.encode(" " + w) for w in words}
        wanted = {t for v in ids.values() for t in v}
        rows = []
        for scale in args.scales:
            steps = args.sample_steps // 2 if args.equal_nfe and scale > 0 else args.sample_steps
            config = SampleConfig(
                gen_length=args.gen_length, steps=steps, seed=0, temperature=temperature,
                guide_words=args.words if scale > 0 else None, guide_scale=scale,
            )  # fmt: skip
            out = api.generate(loaded, prompt, config=config, n=args.n)  # rows seeded 0..n-1
            holds = sum(
                all(any(r[i : i + len(t)] == t for i in range(len(r))) for t in ids.values())
                for r in out.ids
            )
            share = sum(t in wanted for r in out.ids for t in r) / (args.n * args.gen_length)
            rows.append({"scale": scale, "steps": steps, "samples_with_all_words": holds,
                         "n": args.n, "share_of_tokens": share, "entropy": unigram_entropy(out.ids),
                         "nfe": out.nfe, "sample": out.texts[0]})  # fmt: skip
    print(f"{run} (temperature {temperature:g})")
    head = ("scale", "steps", "all words", "word share", "entropy", "NFE")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 5, 10, 10, 8, 5), strict=True)))
    for r in rows:
        print(f"{r['scale']:>6g} {r['steps']:>5} {r['samples_with_all_words']:>5}/{r['n']:<4} "
              f"{r['share_of_tokens']:>10.3f} {r['entropy']:>8.2f} {r['nfe']:>5}")  # fmt: skip
    # whole or not at all: a write cut short (a full disk, Ctrl-C) left half a file
    write_results(args.json, {"args": vars(args), "rows": rows}, indent=2)


if __name__ == "__main__":
    from _common import run

    run(main)
