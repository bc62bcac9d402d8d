"""Objectives side by side: ``ar``, ``mdlm``, ``bd3lm`` (blocks of 4 and 16) and ``sedd``
(absorbing).

Every model is trained by ``unmask.train`` on the same corpus with the same preset, sequence
length, batch, steps (so the same token budget), learning rate and seed, then measured on the
same held-out windows (the first ``eval-batches × eval-batch-size`` windows of the validation
split):

- validation bits per byte and the perplexity they imply, all as bounds on -log p of the whole
  window: ``ar`` scores tokens 2..L exactly and its first token by the training unigram (so it
  is a complete model of the window too); ``mdlm`` / ``bd3lm`` report their ELBO and ``sedd``
  its DWDSE bound with the prior term (``unmask.sedd``), each averaged over ``eval-repeats``
  noise draws; the ratio of each perplexity bound to the ``ar`` perplexity;
- generative perplexity of ``gen-samples`` samples of ``gen-length`` tokens (after an EOS,
  the document separator) under the reference scorer (``unmask.scoring``; the column is
  skipped when it is not installed), the unigram entropy of those samples, and the NFE it took:
  ``ar`` one forward per token, the diffusion models ``sample-steps`` steps (``mdlm`` LLaDA's
  loop with random remasking at temperature 1, i.e. ancestral sampling; ``bd3lm`` block by
  block; ``sedd`` the analytic sampler);
- training tokens/s (each run alone, one after the other: the machine's noise hits them in turn).

The published anchors are printed next to ours: MDLM's bound is 1.31× the AR perplexity on
OpenWebText (22.98 vs 17.54; Sahoo et al. 2024) and BD3-LM with blocks of 4 is 1.24× on LM1B
(28.23 vs 22.83; Arriola et al. 2025).

    python benchmarks/objectives.py [--steps 2000] [--preset demo] [--seq-len 128] [--batch-size 16]
    python benchmarks/objectives.py --quick          # a smoke test (~1 min on 2 CPU cores)

By default the packaged demo corpus (the World English Bible) is prepared into a temporary
directory as ``unmask demo --train`` does; ``--data DIR`` reuses a prepared dataset.
Results: a table on stdout and ``benchmarks/results/objectives.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmask.checkpoint import load
from unmask.commands.demo import DemoTrainPlan, asset_path
from unmask.config import SampleConfig, TrainConfig
from unmask.data import TokenDataset, prepare
from unmask.errors import UserError
from unmask.evaluate import evaluate_loss, unigram_entropy
from unmask.sampling import decode_generations, generate, generate_ar, generate_sedd, sample_blocks
from unmask.train import train

RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("ar", "ar", {}),
    ("mdlm", "mdlm", {}),
    ("bd3lm-4", "bd3lm", {"block_size": 4}),
    ("bd3lm-16", "bd3lm", {"block_size": 16}),
    ("sedd", "sedd", {"sedd_graph": "absorbing"}),
]
ANCHORS = [
    ("MDLM / AR perplexity, OpenWebText (Sahoo et al. 2024)", 22.98, 17.54),
    ("BD3-LM block 4 / AR perplexity, LM1B (Arriola et al. 2025)", 28.23, 22.83),
]
QUICK = dict(
    preset="tiny",
    steps=20,
    seq_len=32,
    batch_size=8,
    eval_batches=2,
    eval_batch_size=8,
    eval_repeats=1,
    gen_samples=2,
    gen_length=16,
    corpus_lines=3000,
    vocab_size=512,
)


def prepare_corpus(work: Path, *, lines: int | None, vocab_size: int) -> Path:
    """The packaged demo corpus, tokenized as ``unmask demo --train`` does (BPE, 2% validation);
    ``lines``: only the first lines (quick runs)."""
    src = asset_path("web-bible.txt.gz")
    if lines:
        with gzip.open(src, "rt", encoding="utf-8") as f:
            head = [line for _, line in zip(range(lines), f, strict=False)]
        src = work / "corpus.txt"
        src.write_text("".join(head), encoding="utf-8")
    out = work / "data"
    prepare([src], out, vocab_size=vocab_size, val_fraction=0.02, progress=False)
    return out


def unigram_nll(data: Path, vocab_size: int) -> np.ndarray:
    """-log p(token) of the training split's unigram (add-one smoothed), per token id."""
    ds = TokenDataset(data, "train")
    counts = np.bincount(ds.read(0, ds.n_tokens), minlength=vocab_size).astype(np.float64) + 1.0
    return -np.log(counts / counts.sum())


def held_out_bound(
    run: Path, objective: str, data: Path, args: argparse.Namespace, first_nll: np.ndarray
) -> dict:
    """Nats per token of the held-out windows: a bound on -log p(window) / L for every model."""
    model = load(run).model.eval()
    val = TokenDataset(data, "val")
    repeats = 1 if objective == "ar" else args.eval_repeats
    total, count = 0.0, 0
    for r in range(repeats):
        res = evaluate_loss(
            model,
            val,
            objective=objective,
            seq_len=args.seq_len,
            batch_size=args.eval_batch_size,
            max_batches=args.eval_batches,
            seed=1234 + r,
            eps=1e-3,
        )
        total += res.loss * res.n_tokens
        count += res.n_tokens
    loss = total / count
    n_windows = min(args.eval_batches * args.eval_batch_size, val.num_windows(args.seq_len))
    if objective == "ar":  # tokens 2..L exactly; the first token of each window by the unigram
        firsts = [
            int(w[0]) for w, _ in zip(val.windows(args.seq_len), range(n_windows), strict=False)
        ]
        loss = (loss * count + float(first_nll[firsts].sum())) / (n_windows * args.seq_len)
    return {
        "loss": loss,
        "bpb": loss / math.log(2) / val.bytes_per_token,
        "ppl": math.exp(min(loss, 50.0)),
        "windows": n_windows,
    }


def sample(run: Path, name: str, args: argparse.Namespace) -> dict:
    """``gen_samples`` samples of ``gen_length`` tokens after an EOS with the model's own
    sampler."""
    loaded = load(run)
    model, tok, cfg = loaded.model.eval(), loaded.tokenizer, loaded.config
    prompts = [[cfg.eos_id]] * args.gen_samples
    steps = args.sample_steps or args.gen_length
    gen = torch.Generator().manual_seed(0)
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    t0 = time.perf_counter()
    if cfg.attention == "causal":
        res = generate_ar(
            model,
            prompts,
            max_new_tokens=args.gen_length,
            temperature=1.0,
            eos_id=cfg.eos_id,
            pad_id=cfg.pad_id,
            generator=gen,
        )
    elif cfg.attention == "block-causal":
        sc = SampleConfig(
            gen_length=args.gen_length, steps=steps, temperature=1.0, remasking="random"
        )
        res = sample_blocks(model, prompts, sc, generator=gen, **ids)
    elif name == "sedd":
        sc = SampleConfig(gen_length=args.gen_length, steps=steps, policy="sedd-analytic")
        res = generate_sedd(model, prompts, sc, generator=gen, **ids)
    else:
        sc = SampleConfig(
            gen_length=args.gen_length, steps=steps, temperature=1.0, remasking="random"
        )
        res = generate(model, prompts, sc, generator=gen, **ids)
    seconds = time.perf_counter() - t0
    texts = decode_generations(res.gen_ids, tok, cfg.eos_id)
    cut = [ids_[: ids_.index(cfg.eos_id)] if cfg.eos_id in ids_ else ids_ for ids_ in res.gen_ids]
    return {"texts": texts, "nfe": res.nfe, "seconds": seconds, "entropy": unigram_entropy(cut)}


def gen_ppl(texts: list[str], scorer: Any) -> float | None:
    if scorer is None or not any(t.strip() for t in texts):
        return None
    return scorer.perplexity(texts)


def load_scorer() -> Any:
    try:
        from unmask.scoring import ReferenceScorer

        return ReferenceScorer.from_smollm2()
    except UserError as e:
        print(f"generative perplexity skipped: {e}", file=sys.stderr)
        return None


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", help="model preset of every run (default: demo)")
    ap.add_argument(
        "--steps", type=int, default=2000, help="optimizer steps of every run (default: 2000)"
    )
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per row (default: 128)")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per step (default: 16)")
    ap.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3, as the demo)"
    )
    ap.add_argument(
        "--warmup", type=int, default=None, help="warmup steps (default: min(100, steps/10))"
    )
    ap.add_argument("--eval-batches", type=int, default=16, help="held-out batches (default: 16)")
    ap.add_argument(
        "--eval-batch-size", type=int, default=16, help="held-out windows per batch (default: 16)"
    )
    ap.add_argument(
        "--eval-repeats", type=int, default=4, help="noise draws per diffusion bound (default: 4)"
    )
    ap.add_argument("--gen-samples", type=int, default=16, help="samples per model (default: 16)")
    ap.add_argument("--gen-length", type=int, default=64, help="tokens per sample (default: 64)")
    ap.add_argument(
        "--sample-steps",
        type=int,
        default=None,
        help="diffusion steps per sample (default: gen-length)",
    )
    ap.add_argument("--data", help="a prepared dataset (unmask prepare) instead of the demo corpus")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(n for n, _, _ in RUNS))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: tiny preset, 20 steps, a corpus slice"
    )
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "objectives.json"),
                    help="where to write the results (default: benchmarks/results/objectives.json)")
    args = ap.parse_args()
    corpus_lines, vocab_size = None, DemoTrainPlan().vocab_size
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        corpus_lines, vocab_size = QUICK["corpus_lines"], QUICK["vocab_size"]
    runs = RUNS
    if args.only:
        wanted = args.only.split(",")
        runs = [r for r in RUNS if r[0] in wanted]
        if "ar" not in wanted:
            runs = [RUNS[0], *runs]  # the ratios need it
    warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    scorer = load_scorer()

    with tempfile.TemporaryDirectory(prefix="unmask-objectives-") as tmp:
        work = Path(tmp)
        data = (
            Path(args.data)
            if args.data
            else prepare_corpus(work, lines=corpus_lines, vocab_size=vocab_size)
        )
        vocab = TokenDataset(data, "train").vocab_size
        first_nll = unigram_nll(data, vocab)
        rows = []
        for name, objective, extra in runs:
            print(f"training {name} ...", file=sys.stderr, flush=True)
            cfg = TrainConfig(
                data=str(data),
                out=str(work / name),
                preset=args.preset,
                objective=objective,
                seq_len=args.seq_len,
                batch_size=args.batch_size,
                steps=args.steps,
                lr=args.lr,
                warmup=warmup,
                eval_every=0,
                eval_batches=1,
                save_every=0,
                log_every=10,
                seed=0,
                threads=args.threads,
                **extra,
            )
            run = train(cfg, progress=False)
            metrics = [
                json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            ]
            train_recs = [m for m in metrics if "tokens_per_s" in m]
            params = next(m["params"] for m in metrics if m.get("event") == "start")
            bound = held_out_bound(run, objective, data, args, first_nll)
            samples = sample(run, name, args)
            rows.append(
                {
                    "name": name,
                    "objective": objective,
                    **extra,
                    "params": params,
                    "train_tokens_per_s": train_recs[-1]["tokens_per_s"],
                    "final_train_loss": train_recs[-1]["loss"],
                    "val_loss": bound["loss"],
                    "val_bpb": bound["bpb"],
                    "val_ppl_bound": bound["ppl"],
                    "gen_ppl": gen_ppl(samples["texts"], scorer),
                    "gen_entropy": samples["entropy"],
                    "nfe": samples["nfe"],
                    "sample_seconds": samples["seconds"],
                    "sample": samples["texts"][0],
                }
            )

    ar_row = next(r for r in rows if r["name"] == "ar")
    for r in rows:
        r["ppl_ratio_vs_ar"] = r["val_ppl_bound"] / ar_row["val_ppl_bound"]
        r["tokens_per_s_ratio_vs_ar"] = r["train_tokens_per_s"] / ar_row["train_tokens_per_s"]
    print(
        f"\npreset={args.preset} steps={args.steps} seq_len={args.seq_len} batch={args.batch_size} "
        f"tokens={args.steps * args.seq_len * args.batch_size:,} vocab={vocab} "
        f"held-out windows={args.eval_batches * args.eval_batch_size} "
        f"gen={args.gen_samples}x{args.gen_length}"
    )
    head = (
        f"{'objective':<10} {'params':>8} {'train tok/s':>12} {'val bpb':>8} {'ppl bound':>10} "
        f"{'x AR':>6} "
        f"{'gen ppl':>8} {'entropy':>8} {'NFE':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:<10} {r['params'] / 1e6:>7.2f}M {r['train_tokens_per_s']:>12,.0f} "
            f"{r['val_bpb']:>8.3f} {r['val_ppl_bound']:>10.2f} {r['ppl_ratio_vs_ar']:>6.2f} "
            f"{fmt(r['gen_ppl'], '>8.1f')} "
            f"{r['gen_entropy']:>8.2f} {r['nfe']:>5}"
        )
    print("\npublished anchors:")
    for label, ours, ar_ppl in ANCHORS:
        print(f"  {label}: {ours} / {ar_ppl} = {ours / ar_ppl:.2f}x")
    print(
        "ar: exact NLL of tokens 2..L plus the unigram NLL of token 1; "
        "diffusion rows: their bounds (upper bounds)."
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "anchors": [
                    {"label": label, "ppl": ours, "ar_ppl": ar_ppl, "ratio": ours / ar_ppl}
                    for label, ours, ar_ppl in ANCHORS
                ],
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
