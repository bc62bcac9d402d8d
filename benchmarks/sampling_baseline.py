"""Baseline of the LLaDA sampler on the demo checkpoint: tokens/s, NFE, and model quality.

For gen_length 64 and 256, at steps = gen_length (one token per step) and steps =
gen_length/4, it times ``unmask.api.start(...).run()`` (median of ``--repeats`` runs) and
reports NFE and tokens/s. Then it measures the model: validation bits per byte and the
ELBO perplexity bound on the held-out split of the packaged corpus (the same split
the model was validated on while training), plus a few samples. This is the baseline
that the fast-decoding policies are compared with.

    python benchmarks/sampling_baseline.py [--model PATH] \
        [--json benchmarks/results/sampling_baseline.json]
    python benchmarks/sampling_baseline.py --quick   # does it run? (gen 16, 2 eval batches)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import non_negative_int, output_file, positive_int, write_results

from unmask import api
from unmask.checkpoint import load
from unmask.commands.demo import asset_path
from unmask.config import SampleConfig
from unmask.data import TokenDataset, prepare
from unmask.evaluate import evaluate_loss

PROMPT = "And God said,"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(asset_path("demo")))
    ap.add_argument("--repeats", type=positive_int, default=None,
                    help="timed runs per row, median (default: 3; --quick: 1)")  # fmt: skip
    ap.add_argument("--batch", type=positive_int, default=1)
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch CPU threads (0 = torch's default)")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: gen_length 16 only, 1 repeat, 2 validation batches, one "
                    "sample of 16 tokens (flags given still win)")  # fmt: skip
    ap.add_argument("--json", type=output_file, help="write results here")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    m = load(args.model)
    cfg, tok = m.config, m.tokenizer
    prompt = tok.encode(PROMPT)
    rows = []
    print(
        f"model {args.model}: {sum(p.numel() for p in m.model.parameters()) / 1e6:.2f}M params, "
        f"max_seq_len {cfg.max_seq_len}, threads {torch.get_num_threads()}, batch {args.batch}"
    )
    print(
        f"{'gen_length':>10} {'steps':>6} {'block':>6} {'NFE':>5} {'seconds':>8} {'tokens/s':>9}  "
        "prompt"
    )
    for gen_length in (16,) if args.quick else (64, 256):
        # 256 new tokens fill the whole context of the demo model: generate unconditionally.
        ids = prompt if len(prompt) + gen_length <= cfg.max_seq_len else []
        for steps in (gen_length, gen_length // 4):
            sc = SampleConfig(gen_length=gen_length, steps=steps, block_length=None)
            batch = [ids] * args.batch
            api.start(m, batch, sc).run()  # warm-up, untimed: first-call costs land here
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res = api.start(m, batch, sc).run()
                times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            tps = gen_length * args.batch / sec
            rows.append(
                {
                    "gen_length": gen_length,
                    "steps": steps,
                    "nfe": res.nfe,
                    "seconds": sec,
                    "tokens_per_s": tps,
                    "prompt": bool(ids),
                    "batch": args.batch,
                }
            )
            print(
                f"{gen_length:>10} {steps:>6} {gen_length:>6} {res.nfe:>5} {sec:>8.3f} {tps:>9.1f} "
                " "
                f"{'yes' if ids else 'none'}"
            )

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bible"
        prepare(
            [asset_path("web-bible.txt.gz")],
            data,
            tokenizer=str(m.path / "tokenizer.json"),
            val_fraction=0.02,
            progress=False,
        )
        val = TokenDataset(data, "val")
        q = evaluate_loss(
            m.model,
            val,
            objective="mdlm",
            seq_len=min(256, cfg.max_seq_len),
            batch_size=8,
            max_batches=2 if args.quick else None,
            seed=1234,
        )
    print(
        f"\nvalidation ({q.n_tokens:,} tokens): ELBO bound {q.loss:.4f} nats/token, "
        f"perplexity bound {q.ppl:.2f}, {q.bpb:.4f} bits/byte"
    )
    samples = []
    n = 16 if args.quick else 64
    print(f"\nsamples at the demo's settings (gen_length {n}, steps {n}, block 4, temperature "
          "0.8):")  # fmt: skip
    starts = ["In the beginning, God"] if args.quick else ["In the beginning, God",
                                                            "Jesus answered them,", ""]
    for i, p in enumerate(starts):
        sc = SampleConfig(gen_length=n, steps=n, block_length=4, temperature=0.8, seed=i)
        text = p + api.generate(m, p, config=sc).texts[0]
        samples.append(text)
        print(f"  - {text!r}")
    if args.json:
        write_results(args.json, {  # whole or not at all
            "model": args.model,
            "rows": rows,
            "quality": {
                "val_loss": q.loss,
                "val_ppl_bound": q.ppl,
                "val_bpb": q.bpb,
                "val_tokens": q.n_tokens,
            },
            "samples": samples,
            "threads": torch.get_num_threads(),
            "quick": args.quick,
        }, indent=2)


if __name__ == "__main__":
    from _common import run

    run(main)
