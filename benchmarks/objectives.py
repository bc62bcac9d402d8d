"""Objectives side by side: ``ar``, ``mdlm``, ``bd3lm`` (blocks of 4 and 16), ``sedd``
(absorbing), and the continuous families ``embed-diffusion`` and latent diffusion
(``latent-ae`` for the first half of the steps, then ``latent-diffusion`` ``--init`` it for
the second half: the same token budget in all).

Every model is trained by ``unmask.train`` on the same corpus with the same preset, sequence
length, batch, steps (so the same token budget), learning rate and seed, then measured on the
same held-out windows (the first ``eval-batches × eval-batch-size`` windows of the validation
split):

- validation bits per byte and the perplexity they imply, all as bounds on -log p of the whole
  window: ``ar`` scores tokens 2..L exactly and its first token by the training unigram (so it
  is a complete model of the window too); ``mdlm`` / ``bd3lm`` report their ELBO and ``sedd``
  its DWDSE bound with the prior term (``unmask.sedd``), each averaged over ``eval-repeats``
  noise draws; the ratio of each perplexity bound to the ``ar`` perplexity;
- generative perplexity of ``gen-samples`` samples of ``gen-length`` tokens under the
  reference scorer (``unmask.scoring``; the column is skipped when it is not installed), the
  unigram entropy of those samples, how many are broken (a special token or undecodable bytes,
  U+FFFD: junk the scorer can rate well) and the NFE it took. Each sample continues
  ``--prompt-len`` tokens of held-out text, the start of a different validation window (the
  same prompts for every family; the demo corpus is one document, so a start after an EOS
  would be a context no model saw); the continuation alone is scored. Latent diffusion takes
  no prompt: it samples whole windows, whose first ``gen-length`` tokens are kept. Samplers:
  ``ar`` one forward per token, the diffusion models ``sample-steps`` steps (``mdlm`` LLaDA's
  loop with random remasking at temperature 1, i.e. ancestral sampling; ``bd3lm`` block by
  block; ``sedd`` the analytic sampler);
- training tokens/s (each run alone, one after the other: the machine's noise hits them in turn);
- the continuous families have no likelihood bound here: their held-out number is their own
  training loss on the held-out windows (``est. nats``: the denoising cross-entropy for
  ``embed-diffusion``, reconstruction + latent denoising for latent diffusion), an estimate of
  nothing but itself, so the bpb and ratio columns are empty for them; they sample with their
  own decoders through ``unmask.api.start`` (Gaussian noise, rounding at the checkpoint's
  recommended temperature, ``api.sample_config``; argmax rounding
  repeats frequent tokens);
- a ``unigram`` row: samples drawn from the training unigram, the floor every family must beat
  in generative perplexity, and the tempered-unigram floor (``FLOOR_TEMPERATURES``): each
  row's gen ppl over a sharpened unigram's at the same sample entropy (``x floor``), since
  lower entropy alone buys lower gen ppl;
- infill exact match and token accuracy (``infill EM``, ``infill acc``): ``--infill-n``
  held-out windows of ``seq-len`` tokens with one span of ``--infill-span`` tokens masked
  (``unmask.gapset.make_gap_set``, the gaps of ``benchmarks/infill.py``), refilled with
  ``sample-steps`` steps by the models that can condition on both sides (mdlm: LLaDA
  low-confidence, sedd: analytic, embed-diffusion: replacement); exact match is the share of
  spans refilled exactly, token accuracy the share of span tokens right at their position;
- sampling tokens/s, and with ``--step-sweep`` the generative perplexity, entropy and
  sampling seconds at 1/16, 1/4 and 1/2 of ``sample-steps`` too: from them, each diffusion
  row's setting whose sampling time is closest to ``ar``'s (``equal_time``: quality at equal
  generation time) and the fewest steps within 10% of the full-step gen ppl
  (``steps_for_quality``).

``--preset bench`` is the benchmarks' size (``MODEL_PRESETS["bench"]``: d_model 64, 4 layers),
``--vocab-size`` re-tokenizes the demo corpus (a smaller BPE makes the output layer, most of
a small model's step, cheaper), ``--plot`` writes a PNG (bits/byte of the families with a
bound; gen ppl against sampling seconds). ``--work DIR`` keeps the runs and each finished
row there: rerun the same command to resume after an interruption (finished families are
skipped), or run parts side by side (``--only latent`` in a second process; then one rerun
with all of them prints the table). Each family checkpoints every ``--save-every`` steps:
stopped by Ctrl-C or SIGTERM (it saves first) or killed, a rerun continues its run from the
last checkpoint with ``unmask train``'s resume, so it ends as an uninterrupted one would; a
finished run is never retrained, so a rerun with other measurement options (samples, prompt
length, steps of the sweep) measures the same models afresh (``train_run``).

The published anchors are printed next to ours: MDLM's bound is 1.31× the AR perplexity on
OpenWebText (22.98 vs 17.54; Sahoo et al. 2024) and BD3-LM with blocks of 4 is 1.24× on LM1B
(28.23 vs 22.83; Arriola et al. 2025).

    python benchmarks/objectives.py [--steps 2000] [--preset demo] [--seq-len 128] [--batch-size 16]
    python benchmarks/objectives.py --quick          # a smoke test (~1 min on 2 CPU cores)
    python benchmarks/objectives.py --preset bench --vocab-size 1024 --steps 600 --seq-len 64 \
        --gen-length 48 --only ar,mdlm,bd3lm-16,embed,latent --step-sweep --work WORK \
        --plot out.png

By default the packaged demo corpus (the World English Bible) is prepared into a temporary
directory as ``unmask demo --train`` does; ``--data DIR`` reuses a prepared dataset.
Results: a table on stdout and ``runs/bench/objectives.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    default_output,
    generated,
    non_negative_int,
    output_file,
    positive_int,
    write_results,
)

from unmask import api
from unmask.checkpoint import checkpoint_dir, load
from unmask.commands.demo import DemoTrainPlan, asset_path
from unmask.config import SampleConfig, TrainConfig
from unmask.data import TokenDataset, prepare
from unmask.errors import UserError
from unmask.evaluate import evaluate_loss, unigram_entropy
from unmask.files import atomic_write_text
from unmask.sampling import decode_generations, generate, generate_ar, generate_sedd, sample_blocks
from unmask.sampling.protocol import cut_at_eos
from unmask.scoring import perplexity
from unmask.train import load_train_config, train
from unmask.train_guards import saved_progress

RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("ar", "ar", {}),
    ("mdlm", "mdlm", {}),
    ("bd3lm-4", "bd3lm", {"block_size": 4}),
    ("bd3lm-16", "bd3lm", {"block_size": 16}),
    ("sedd", "sedd", {"sedd_graph": "absorbing"}),
    ("embed", "embed-diffusion", {}),
    ("latent", "latent-diffusion", {"latent_len": 16}),
]
CONTINUOUS = ("embed-diffusion", "latent-diffusion")
"""Objectives without a likelihood bound here (sampled through ``unmask.api.start``)."""
FLOOR_TEMPERATURES = (1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
"""The tempered-unigram floor: unigram samples at these temperatures trace gen ppl against
sample entropy. Gen ppl alone rewards repeating frequent tokens (a unigram at temperature 0.6
scores 7× better than at 1), so each family is compared with the floor at its own entropy
(``x floor``: above 1, the scorer rates its text below a unigram's of the same diversity)."""
STAGE1 = {"latent-diffusion": "latent-ae"}
"""Objectives trained in two stages: the first stage's objective (``--ae-fraction`` of the
steps, half by default; ``stage_steps``)."""
INFILL = ("mdlm", "sedd", "embed-diffusion")
"""Objectives whose decoders refill a masked span from both sides."""
ANCHORS = [
    ("MDLM / AR perplexity, OpenWebText (Sahoo et al. 2024)", 22.98, 17.54),
    ("BD3-LM block 4 / AR perplexity, LM1B (Arriola et al. 2025)", 28.23, 22.83),
]
PLAN_FIELDS = ("preset", "objective", "seq_len", "batch_size", "steps", "lr", "warmup", "seed")
"""The ``TrainConfig`` fields this script sets (with each run's extras): a run in ``--work``
trained to other values is not this plan's, and is refused rather than reused or extended."""
PLAN_EXTRAS = {"bd3lm": ("block_size",), "sedd": ("sedd_graph",),
               "latent-ae": ("latent_len",), "latent-diffusion": ("latent_len",)}  # fmt: skip
"""The objective's own settings among them (``RUNS``' extras)."""
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
    prompt_len=4,
    infill_n=2,
    corpus_lines=3000,
    vocab_size=512,
)


def select_runs(only: str | None, keep_ar: bool = True) -> list[tuple[str, str, dict[str, Any]]]:
    """The rows of ``RUNS`` that ``--only`` names (all without it), ``ar`` first when
    ``keep_ar`` (the ratios need it); a ``UserError`` for a name no row has."""
    if not only:
        return list(RUNS)
    wanted = [w.strip() for w in only.split(",")]
    unknown = [w for w in wanted if w not in {name for name, _, _ in RUNS}]
    if unknown:
        from unmask.errors import UserError

        raise UserError(f"--only {only}: unknown {', '.join(map(repr, unknown))}; choose from "
                        + ", ".join(name for name, _, _ in RUNS))  # fmt: skip
    runs = [r for r in RUNS if r[0] in wanted]
    if "ar" not in wanted and keep_ar:
        runs = [RUNS[0], *runs]  # with --work: a later full rerun adds it
    return runs


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
    if (out / "index.json").exists():  # prepared by an earlier run in this --work directory
        return out
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
        "ppl": perplexity(loss),
        "windows": n_windows,
    }


def held_out_prompts(data: Path, n: int, prompt_len: int, seq_len: int) -> list[list[int]]:
    """``n`` prompts of ``prompt_len`` tokens: the starts of ``n`` different held-out windows
    of ``seq_len`` tokens, spread evenly over the validation split (deterministic, the same
    for every family). The samples continue held-out text: the demo corpus is one document,
    so a start after an EOS (the document separator) is a context no model trained on."""
    val = TokenDataset(data, "val")
    total = val.num_windows(seq_len)
    if total < n:
        raise UserError(f"the validation split has {total} windows of {seq_len}; {n} samples "
                        f"need one each (fewer --gen-samples)")  # fmt: skip
    picks = {round(i * total / n) for i in range(n)}
    starts = [w for i, (w, _) in enumerate(zip(val.windows(seq_len), range(total), strict=False))
              if i in picks]  # fmt: skip
    return [[int(t) for t in w[:prompt_len]] for w in starts]


def is_broken(ids: list[int], text: str, tok: Any) -> bool:
    """A sample that is not text: it holds a special token ([MASK], [PAD], [BOS], ...) or
    bytes that do not decode (U+FFFD). The scorer can rate such junk well (it predicts runs
    of U+FFFD easily), so the table counts them beside the gen ppl."""
    return "\ufffd" in text or any(tok.is_special(i) for i in ids)


def sample(
    run: Path,
    name: str,
    args: argparse.Namespace,
    prompts: list[list[int]],
    steps: int | None = None,
) -> dict:
    """``gen_samples`` continuations of ``gen_length`` tokens of ``prompts`` (held-out text,
    ``held_out_prompts``) with the model's own sampler (``steps`` diffusion steps, default
    ``sample-steps``); a latent model takes no prompt and samples whole windows, whose first
    ``gen_length`` tokens are kept. Only the continuations are decoded, scored and counted."""
    loaded = load(run)
    model, tok, cfg = loaded.model.eval(), loaded.tokenizer, loaded.config
    steps = steps or args.sample_steps or args.gen_length
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    sampled = args.gen_length
    if cfg.objective == "latent-diffusion":  # it writes whole windows, unprompted
        prompts = [[]] * len(prompts)
        sampled = cfg.latent_window or sampled

    ar = cfg.objective not in CONTINUOUS and cfg.attention == "causal"  # a row ends at its
    # EOS: it counts its own text (_common.generated), a diffusion row every position

    def decode(prompts: list[list[int]], gen: torch.Generator) -> Any:
        if cfg.objective in CONTINUOUS:  # the one decoding path
            # the checkpoint's recommended rounding temperature (sample_defaults), as a
            # command line run gets it: argmax rounding repeats frequent tokens
            # (docs/sampling.md)
            sc = api.sample_config(loaded, {"gen_length": sampled, "steps": steps, "seed": 0})
            return api.start(loaded, prompts, sc).run()
        if ar:
            return generate_ar(model, prompts, max_new_tokens=args.gen_length,
                               temperature=1.0, eos_id=cfg.eos_id, pad_id=cfg.pad_id,
                               generator=gen)  # fmt: skip
        if cfg.attention == "block-causal":
            sc = SampleConfig(
                gen_length=args.gen_length, steps=steps, temperature=1.0, remasking="random"
            )
            return sample_blocks(model, prompts, sc, generator=gen, **ids)
        if name == "sedd":
            sc = SampleConfig(gen_length=args.gen_length, steps=steps, policy="sedd-analytic")
            return generate_sedd(model, prompts, sc, generator=gen, **ids)
        sc = SampleConfig(
            gen_length=args.gen_length, steps=steps, temperature=1.0, remasking="random"
        )
        return generate(model, prompts, sc, generator=gen, **ids)

    # untimed: the first call's one-time costs fell on the first objective sampled (ar),
    # whose seconds are the budget of the equal-time comparison
    decode(prompts[:1], torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    res = decode(prompts, torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    gen = [list(g)[: args.gen_length] for g in res.gen_ids]
    cut = [cut_at_eos(g, cfg.eos_id) for g in gen]
    texts = decode_generations(gen, tok, cfg.eos_id)
    return {"texts": texts, "nfe": res.nfe, "seconds": seconds, "entropy": unigram_entropy(cut),
            "broken": sum(is_broken(g, t, tok) for g, t in zip(cut, texts, strict=True)),
            "tokens": sum(generated(g, cfg.eos_id) for g in gen) if ar  # each row's own
            else len(gen) * sampled}  # fmt: skip


def unigram_samples(
    data: Path, nll: np.ndarray, args: argparse.Namespace, temperature: float = 1.0
) -> dict:
    """``gen_samples`` texts of ``gen_length`` tokens drawn from the training unigram, sharpened
    to p^(1/temperature) (renormalised) below temperature 1."""
    tok = TokenDataset(data, "train").tokenizer()
    p = torch.from_numpy(np.exp(-nll / temperature))
    special = [i for i in range(len(p)) if tok.is_special(i)]
    p[special] = 0.0
    g = torch.Generator().manual_seed(0)
    rows = torch.multinomial(p, args.gen_samples * args.gen_length, replacement=True, generator=g)
    rows = rows.view(args.gen_samples, args.gen_length).tolist()
    texts = [tok.decode(r) for r in rows]
    broken = sum(is_broken(r, t, tok) for r, t in zip(rows, texts, strict=True))
    return {"texts": texts, "entropy": unigram_entropy(rows), "broken": broken}


def floor_curve(
    data: Path,
    nll: np.ndarray,
    args: argparse.Namespace,
    measure: Callable[[dict], tuple[float, float | None]],
    drawn: dict[float, dict] | None = None,
) -> list[dict]:
    """The tempered-unigram floor: ``measure(samples)`` -> (entropy, gen ppl) of
    ``unigram_samples`` at each of ``FLOOR_TEMPERATURES`` (``drawn``: samples already drawn
    at some of them, used as they are)."""
    curve = []
    for temp in FLOOR_TEMPERATURES:
        samples = (drawn or {}).get(temp) or unigram_samples(data, nll, args, temp)
        entropy, ppl = measure(samples)
        curve.append({"temperature": temp, "entropy": entropy, "gen_ppl": ppl})
    return curve


def floor_at(curve: list[dict], entropy: float) -> float | None:
    """The tempered-unigram floor's gen ppl at a sample entropy: log gen ppl interpolated
    linearly in entropy between the two nearest points of ``curve`` (``{"entropy",
    "gen_ppl"}`` each); None outside the curve's entropy range or without a scorer."""
    pts = sorted((c["entropy"], c["gen_ppl"]) for c in curve if c.get("gen_ppl"))
    for (e0, p0), (e1, p1) in itertools.pairwise(pts):
        if e0 <= entropy <= e1:
            w = 0.0 if e1 == e0 else (entropy - e0) / (e1 - e0)
            return math.exp((1 - w) * math.log(p0) + w * math.log(p1))
    return None


def infill_scores(run: Path, data: Path, args: argparse.Namespace) -> dict[str, float | None]:
    """Held-out spans refilled: ``infill_exact_match`` (share of spans equal to the truth) and
    ``infill_token_acc`` (share of span tokens equal to the truth at their position); None for
    the objectives outside ``INFILL``. At this size a span is rarely exact, so token accuracy
    says more."""
    from unmask.canvas import Canvas
    from unmask.data import SPLIT_BLOCK
    from unmask.gapset import make_gap_set
    from unmask.sampling import sample as llada_sample
    from unmask.sampling import sample_sedd
    from unmask.sampling.continuous import EmbedRun
    from unmask.sampling.sedd import model_score_fn
    from unmask.sedd import graph_of

    loaded = load(run)
    model, cfg = loaded.model.eval(), loaded.config
    if cfg.objective not in INFILL:
        return {"infill_exact_match": None, "infill_token_acc": None}
    val = TokenDataset(data, "val")
    span = args.infill_span
    rows = make_gap_set(val, loaded.tokenizer, window=min(args.seq_len, SPLIT_BLOCK), spans=[span],
                        n=args.infill_n, seed=0, block=SPLIT_BLOCK)[span]  # fmt: skip
    steps = args.sample_steps or span
    hits = right = 0
    for r in rows:
        ids = r.prefix + [cfg.mask_id] * span + r.suffix
        canvas = Canvas.from_tokens(torch.tensor([ids]), mask_id=cfg.mask_id)
        sc = SampleConfig(gen_length=span, steps=steps, seed=0)
        with torch.no_grad():
            if cfg.objective == "embed-diffusion":
                out = EmbedRun(model, canvas, sc).run()
            elif cfg.objective == "sedd":
                sc = SampleConfig(gen_length=len(ids), steps=steps, decoder="sedd", seed=0)
                graph = graph_of(cfg)
                out = sample_sedd(model_score_fn(model, graph=graph), canvas, sc, graph=graph)
            else:
                out = llada_sample(model, canvas, replace(sc, gen_length=len(ids)))
        got = out.tokens[0, r.start : r.start + span].tolist()
        hits += got == r.truth
        right += sum(a == b for a, b in zip(got, r.truth, strict=True))
    return {"infill_exact_match": hits / len(rows), "infill_token_acc": right / (span * len(rows))}


def _resume_key(args: argparse.Namespace) -> str:
    """The arguments a finished row depends on (a rerun with others measures afresh)."""
    skip = {"only", "json", "plot", "work", "threads", "save_every", "train_eval_every"}
    return json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in skip})


def train_run(cfg: TrainConfig) -> Path:
    """Train ``cfg``'s run in ``cfg.out``, picking up what an earlier process left there.

    No checkpoint yet: a fresh run (a folder stopped before its first save holds nothing to
    keep and is cleared). A checkpoint short of ``cfg.steps``: the run continues with
    ``unmask.train``'s own resume, on its saved plan, so it ends where an uninterrupted run
    would have. A checkpoint at ``cfg.steps``: kept as it is, so changing only how the rows are
    measured never retrains. A run trained to another plan (``PLAN_FIELDS``, the objective's
    extras) is refused: extending it would not equal a fresh run of this plan. SIGINT/SIGTERM
    save a checkpoint and raise ``TrainingStopped`` (``unmask.train``)."""
    run = Path(cfg.out)
    if not ((run / "checkpoint").is_dir() or (run / ".checkpoint.old").is_dir()):
        if run.exists():
            print(f"{run}: no checkpoint yet, starting it afresh", file=sys.stderr, flush=True)
            shutil.rmtree(run)
        return train(cfg, progress=False)
    ckpt = checkpoint_dir(run)
    saved = load_train_config(run / "train_config.json")
    fields = [*PLAN_FIELDS, *PLAN_EXTRAS.get(cfg.objective, ())]
    diff = [f"{f}={getattr(saved, f)!r} (asked {getattr(cfg, f)!r})" for f in fields
            if getattr(saved, f) != getattr(cfg, f)]  # fmt: skip
    if diff:
        raise UserError(f"{run} was trained with {', '.join(diff)}: use another --work")
    step = saved_progress(ckpt).step
    if step >= cfg.steps:
        return run
    print(f"{run}: resuming at step {step} of {cfg.steps}", file=sys.stderr, flush=True)
    return train(replace(saved, out=cfg.out, threads=cfg.threads, device=cfg.device),
                 resume=True, progress=False)  # fmt: skip


def train_seconds(run: Path) -> float:
    """Training seconds of a run over all its sessions (its checkpoint's ``train_seconds``;
    the last logged ``elapsed_s`` for a checkpoint that lacks it)."""
    seconds = saved_progress(checkpoint_dir(run)).train_seconds
    return seconds or _train_seconds(run)


def _points(row: dict) -> list[dict]:
    """(steps, gen ppl, entropy, seconds) of a row's samples: the full-step run and the sweep."""
    pts = [{"steps": int(k), **v} for k, v in row.get("gen_ppl_by_steps", {}).items()]
    full = {"gen_ppl": row["gen_ppl"], "entropy": row["gen_entropy"],
            "seconds": row["sample_seconds"], "nfe": row["nfe"]}  # fmt: skip
    return sorted([*pts, {"steps": row.get("sample_steps_full", row["nfe"]), **full}],
                  key=lambda p: p["steps"])  # fmt: skip


def equal_time(row: dict, seconds: float) -> dict:
    """The row's sampling setting whose wall time is closest (in ratio) to ``seconds`` (the
    ``ar`` row's): its gen ppl and entropy are the ones to compare at equal generation time."""
    return min(_points(row), key=lambda p: abs(math.log(p["seconds"] / seconds)))


def steps_for_quality(row: dict) -> int | None:
    """The fewest sampling steps whose gen ppl is within 10% of the full-step one's (or
    better) with a sample entropy at most 0.1 below it (fewer steps can lower the gen ppl
    by repeating frequent tokens, which is not better text); None without a scorer."""
    pts = [p for p in _points(row) if p["gen_ppl"] is not None]
    if not pts or row["gen_ppl"] is None:
        return None
    return min(
        p["steps"]
        for p in pts
        if p["gen_ppl"] <= 1.1 * row["gen_ppl"] and p["entropy"] >= row["gen_entropy"] - 0.1
    )


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Three panels: held-out bits/byte of the families with a bound (the continuous ones have
    none), gen ppl against sampling seconds per family (each point a step count) with the
    unigram floor, and gen ppl against sample entropy with the tempered-unigram floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.2))
    bounded = [r for r in rows if r.get("val_bpb") is not None]
    a.bar([r["name"] for r in bounded], [r["val_bpb"] for r in bounded], color="tab:blue")
    for i, r in enumerate(bounded):
        a.text(i, r["val_bpb"], f"{r['val_bpb']:.3f}", ha="center", va="bottom", fontsize=8)
    a.set_ylabel("held-out bits/byte (ar exact, others upper bounds)")
    a.set_title("likelihood (continuous families: no bound)")
    for r in rows:
        if r.get("objective") is None or r.get("gen_ppl") is None:
            continue
        pts = [p for p in _points(r) if p["gen_ppl"] is not None]
        b.plot([p["seconds"] for p in pts], [p["gen_ppl"] for p in pts], "o-", label=r["name"])
        for p in pts:
            b.annotate(str(p["steps"]), (p["seconds"], p["gen_ppl"]), fontsize=7,
                       textcoords="offset points", xytext=(3, 3))  # fmt: skip
    uni = next((r for r in rows if r["name"] == "unigram" and r.get("gen_ppl")), None)
    if uni:
        b.axhline(uni["gen_ppl"], color="gray", ls="--", label="unigram samples")
    if uni and uni.get("floor_curve"):
        pts = sorted((p["entropy"], p["gen_ppl"]) for p in uni["floor_curve"] if p["gen_ppl"])
        c.plot(*zip(*pts, strict=True), "--", color="gray", label="unigram at temperatures")
    for r in rows:
        if r.get("objective") is None or r.get("gen_ppl") is None:
            continue
        pts = [p for p in _points(r) if p["gen_ppl"] is not None]
        c.plot([p["entropy"] for p in pts], [p["gen_ppl"] for p in pts], "o", label=r["name"])
    c.set_yscale("log")
    c.set_xlabel("sample entropy (nats, each sample's own token distribution)")
    c.set_ylabel("gen ppl (SmolLM2-135M)")
    c.set_title("quality at equal diversity (below the line: beats the floor)")
    c.legend(fontsize=8)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("sampling seconds (all samples; labels: steps)")
    b.set_ylabel("gen ppl (SmolLM2-135M)")
    b.set_title("sample quality against sampling time")
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


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


def _train_seconds(run: Path) -> float:
    """Training seconds of a run (its last logged ``elapsed_s``)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "elapsed_s" in r][-1]["elapsed_s"]


def fmt(v: float | None, spec: str) -> str:
    """``v`` formatted by ``spec``; None is a "-" of the same width."""
    if v is None:
        width = "".join(c for c in spec.split(".")[0] if c.isdigit() or c in "<>^")
        return format("-", width)
    return format(v, spec)


def check_sampling(args: argparse.Namespace, runs: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Refuse at once the sampling settings a family would refuse after its training (hours
    into a long run): block diffusion samples whole blocks, a latent model whole windows;
    and a two-stage split (``--ae-fraction``) that leaves a stage no steps."""
    for name, objective, extra in runs:
        block = extra.get("block_size")
        if block and args.gen_length % block:
            raise UserError(f"{name} samples whole blocks of {block} tokens: --gen-length "
                            f"({args.gen_length}) must be a multiple of it")  # fmt: skip
        if objective == "latent-diffusion" and args.gen_length > args.seq_len:
            raise UserError(f"{name} samples windows of --seq-len ({args.seq_len}) tokens; "
                            f"--gen-length ({args.gen_length}) cannot exceed it")  # fmt: skip
        if objective in STAGE1:  # its second stage failed after the first had trained
            if not 0 < args.ae_fraction < 1:  # nan included
                raise UserError(f"--ae-fraction must be between 0 and 1 (the autoencoder's "
                                f"share of {name}'s steps), got {args.ae_fraction}")
            second = stage_steps(args.steps, args.ae_fraction)[1]
            if second < 1:
                raise UserError(f"{name} trains in two stages: --steps {args.steps} at "
                                f"--ae-fraction {args.ae_fraction} leaves {second} for the "
                                f"second; give at least 2 steps, or a smaller fraction")


def stage_steps(steps: int, ae_fraction: float) -> tuple[int, int]:
    """The steps of a two-stage family's autoencoder (at least one) and of its second stage."""
    first = max(1, round(steps * ae_fraction))
    return first, steps - first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--preset",
        default="demo",
        help="model preset of every run (default: demo; 'bench': d_model 64, 4 layers)",
    )
    ap.add_argument(
        "--steps", type=positive_int, default=2000,
        help="optimizer steps of every run (default: 2000)"
    )
    ap.add_argument("--seq-len", type=positive_int, default=128,
                    help="tokens per row (default: 128)")  # fmt: skip
    ap.add_argument("--batch-size", type=positive_int, default=16,
                    help="rows per step (default: 16)")  # fmt: skip
    ap.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3, as the demo)"
    )
    ap.add_argument(
        "--warmup", type=non_negative_int, default=None,
        help="warmup steps (default: min(100, steps/10))"
    )
    ap.add_argument("--eval-batches", type=positive_int, default=16,
                    help="held-out batches (default: 16)")  # fmt: skip
    ap.add_argument(
        "--eval-batch-size", type=positive_int, default=16,
        help="held-out windows per batch (default: 16)"
    )
    ap.add_argument(
        "--eval-repeats", type=positive_int, default=4,
        help="noise draws per diffusion bound (default: 4)"
    )
    ap.add_argument("--gen-samples", type=positive_int, default=16,
                    help="samples per model (default: 16)")  # fmt: skip
    ap.add_argument("--gen-length", type=positive_int, default=64,
                    help="tokens per sample (default: 64)")  # fmt: skip
    ap.add_argument(
        "--prompt-len",
        type=positive_int,
        default=8,
        help="held-out tokens each sample continues (a different window per sample; default: 8)",
    )
    ap.add_argument(
        "--sample-steps",
        type=positive_int,
        default=None,
        help="diffusion steps per sample (default: gen-length)",
    )
    ap.add_argument("--infill-n", type=positive_int, default=32,
                    help="held-out spans (default: 32)")  # fmt: skip
    ap.add_argument("--infill-span", type=positive_int, default=4,
                    help="tokens per span (default: 4)")  # fmt: skip
    ap.add_argument(
        "--step-sweep",
        action="store_true",
        help="also gen ppl at 1/4 and 1/2 of sample-steps (diffusion rows)",
    )
    ap.add_argument(
        "--ae-fraction",
        type=float,
        default=0.5,
        help="latent diffusion: share of the steps spent on the autoencoder (default: 0.5)",
    )
    ap.add_argument(
        "--work",
        help="keep the runs and finished rows in DIR; a rerun with the same arguments skips "
        "the families measured already (resume after an interruption)",
    )
    ap.add_argument(
        "--save-every",
        type=int,
        default=200,
        help="checkpoint every N steps, so an interrupted family resumes there (default: 200)",
    )
    ap.add_argument(
        "--train-eval-every",
        type=int,
        default=0,
        help="validate every N steps while training, for the curves in each run's "
        "metrics.jsonl (default: 0 = only at the end)",
    )
    ap.add_argument("--plot", help="also write a PNG of the comparison here")
    ap.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="BPE vocabulary of the prepared demo corpus (default: the demo's, 4096)",
    )
    ap.add_argument("--data", help="a prepared dataset (unmask prepare) instead of the demo corpus")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(n for n, _, _ in RUNS))
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch CPU threads (default: torch's)")  # fmt: skip
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: tiny preset, 20 steps, a corpus slice"
    )
    ap.add_argument(
        "--json", type=output_file,
        default=str(default_output("objectives.json")),
        help="where to write the results (default: runs/bench/objectives.json)",
    )
    args = ap.parse_args()
    corpus_lines, vocab_size = None, DemoTrainPlan().vocab_size
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        corpus_lines, vocab_size = QUICK["corpus_lines"], QUICK["vocab_size"]
    if args.vocab_size:
        vocab_size = args.vocab_size
    runs = select_runs(args.only, keep_ar=not args.work)
    check_sampling(args, runs)
    warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    scorer = load_scorer()

    with tempfile.TemporaryDirectory(prefix="unmask-objectives-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = (
            Path(args.data)
            if args.data
            else prepare_corpus(work, lines=corpus_lines, vocab_size=vocab_size)
        )
        vocab = TokenDataset(data, "train").vocab_size
        first_nll = unigram_nll(data, vocab)
        rows = []
        done_dir = work / "rows"  # one finished row per file: a rerun with --work skips them
        done_dir.mkdir(parents=True, exist_ok=True)
        key = _resume_key(args)
        prompts = held_out_prompts(data, args.gen_samples, args.prompt_len, args.seq_len)
        for name, objective, extra in runs:
            done = done_dir / f"{name}.json"
            if done.exists() and json.loads(done.read_text()).get("key") == key:
                print(f"{name}: measured already ({done})", file=sys.stderr, flush=True)
                rows.append(json.loads(done.read_text())["row"])
                continue
            print(f"training {name} (or resuming it) ...", file=sys.stderr, flush=True)
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
                eval_every=args.train_eval_every,
                eval_batches=4 if args.train_eval_every else 1,
                save_every=args.save_every,
                log_every=10,
                seed=0,
                threads=args.threads,
                **extra,
            )
            seconds, tokens = 0.0, 0
            if objective in STAGE1:  # --ae-fraction of the budget for the autoencoder
                ae_steps, rest = stage_steps(args.steps, args.ae_fraction)  # the one split
                first = train_run(replace(cfg, objective=STAGE1[objective], steps=ae_steps,
                                          out=str(work / f"{name}-ae")))  # fmt: skip
                seconds += train_seconds(first)
                tokens += ae_steps * args.batch_size * args.seq_len
                cfg = replace(cfg, steps=rest, init=str(first))
            run = train_run(cfg)
            metrics = [
                json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            ]
            train_recs = [m for m in metrics if "tokens_per_s" in m]
            params = next(m["params"] for m in metrics if m.get("event") == "start")
            seconds += train_seconds(run)
            tokens += cfg.steps * args.batch_size * args.seq_len
            bound = held_out_bound(run, objective, data, args, first_nll)
            samples = sample(run, name, args, prompts)
            continuous = objective in CONTINUOUS
            sweep: dict[str, dict] = {}
            if args.step_sweep and objective != "ar":
                full = args.sample_steps or args.gen_length
                for steps in sorted({max(1, full // 16), max(1, full // 4), max(1, full // 2)}):
                    s = sample(run, name, args, prompts, steps)
                    sweep[str(steps)] = {"gen_ppl": gen_ppl(s["texts"], scorer),
                                         "entropy": s["entropy"], "seconds": s["seconds"],
                                         "nfe": s["nfe"], "broken": s["broken"]}  # fmt: skip
            rows.append(
                {
                    "name": name,
                    "objective": objective,
                    **extra,
                    "params": params,
                    "train_tokens_per_s": tokens / seconds,
                    "final_train_loss": train_recs[-1]["loss"],
                    "val_loss": bound["loss"],
                    "val_is_bound": not continuous,
                    "val_bpb": None if continuous else bound["bpb"],
                    "val_ppl_bound": None if continuous else bound["ppl"],
                    "gen_ppl": gen_ppl(samples["texts"], scorer),
                    "gen_ppl_by_steps": sweep,
                    "gen_entropy": samples["entropy"],
                    "gen_broken": samples["broken"],
                    "prompted": objective != "latent-diffusion",
                    "nfe": samples["nfe"],
                    "sample_steps_full": args.sample_steps or args.gen_length,
                    "sample_seconds": samples["seconds"],
                    "sample_tokens_per_s": samples["tokens"] / samples["seconds"],
                    **infill_scores(run, data, args),
                    "sample": samples["texts"][0],
                }
            )
            atomic_write_text(done, json.dumps({"key": key, "row": rows[-1]}, indent=1) + "\n")
        uni = unigram_samples(data, first_nll, args)
        curve = floor_curve(data, first_nll, args,
                            lambda u: (u["entropy"], gen_ppl(u["texts"], scorer)),
                            drawn={1.0: uni})  # fmt: skip
        plain = next(c["gen_ppl"] for c in curve if c["temperature"] == 1.0)  # uni's, scored
        rows.append({"name": "unigram", "objective": None, "gen_ppl": plain,
                     "gen_entropy": uni["entropy"], "gen_broken": uni["broken"],
                     "sample": uni["texts"][0], "floor_curve": curve})  # fmt: skip
        for r in rows:
            floor = None if r["gen_ppl"] is None else floor_at(curve, r["gen_entropy"])
            r["floor_gen_ppl"] = floor
            r["x_floor"] = None if floor is None else r["gen_ppl"] / floor

    ar_row = next((r for r in rows if r["name"] == "ar"), None)
    if ar_row is None:  # a part of a --work run: its rows are saved, the table waits for ar
        print("no ar row yet: rerun with --work and ar in --only for the table", file=sys.stderr)
        return
    for r in rows:
        if r.get("objective") not in (None, "ar"):
            r["equal_time"] = equal_time(r, ar_row["sample_seconds"])
            r["steps_for_quality"] = steps_for_quality(r)
        bound = r.get("val_ppl_bound")
        r["ppl_ratio_vs_ar"] = None if bound is None else bound / ar_row["val_ppl_bound"]
        if "train_tokens_per_s" in r:
            r["tokens_per_s_ratio_vs_ar"] = r["train_tokens_per_s"] / ar_row["train_tokens_per_s"]
    print(
        f"\npreset={args.preset} steps={args.steps} seq_len={args.seq_len} batch={args.batch_size} "
        f"tokens={args.steps * args.seq_len * args.batch_size:,} vocab={vocab} "
        f"held-out windows={args.eval_batches * args.eval_batch_size} "
        f"gen={args.gen_samples}x{args.gen_length} after {args.prompt_len} held-out tokens"
    )
    head = (
        f"{'objective':<10} {'params':>8} {'train tok/s':>12} {'val bpb':>8} {'ppl bound':>10} "
        f"{'x AR':>6} {'est. nats':>9} "
        f"{'gen ppl':>8} {'entropy':>8} {'broken':>6} {'NFE':>5} {'gen tok/s':>9} "
        f"{'infill EM':>9} {'infill acc':>10} {'x floor':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["objective"] is None:  # the unigram floor: samples only
            blank = f"{'-':>8} {'-':>12} {'-':>8} {'-':>10} {'-':>6} {'-':>9}"
            print(f"{r['name']:<10} {blank} {fmt(r['gen_ppl'], '>8.1f')} "
                  f"{r['gen_entropy']:>8.2f} {r['gen_broken']:>6} {'':>5} {'':>9} {'':>9} {'':>10} "
                  f"{fmt(r.get('x_floor'), '>7.2f')}")  # fmt: skip
            continue
        est = None if r["val_is_bound"] else r["val_loss"]
        print(
            f"{r['name']:<10} {r['params'] / 1e6:>7.2f}M {r['train_tokens_per_s']:>12,.0f} "
            f"{fmt(r['val_bpb'], '>8.3f')} {fmt(r['val_ppl_bound'], '>10.2f')} "
            f"{fmt(r['ppl_ratio_vs_ar'], '>6.2f')} {fmt(est, '>9.3f')} "
            f"{fmt(r['gen_ppl'], '>8.1f')} "
            f"{r['gen_entropy']:>8.2f} {r['gen_broken']:>6} {r['nfe']:>5} "
            f"{r['sample_tokens_per_s']:>9,.0f} "
            f"{fmt(r['infill_exact_match'], '>9.2f')} {fmt(r.get('infill_token_acc'), '>10.2f')} "
            f"{fmt(r.get('x_floor'), '>7.2f')}"
        )
    sweeps = [r for r in rows if r.get("gen_ppl_by_steps")]
    if sweeps:
        print("\ngen ppl / entropy / sampling seconds by sampling steps:")
        for r in sweeps:
            cells = ", ".join(
                f"{p['steps']}: {fmt(p['gen_ppl'], '.1f')} / {p['entropy']:.2f} / "
                f"{p['seconds']:.1f}s"
                for p in _points(r)
            )
            print(f"  {r['name']:<10} {cells}")
    print(f"\nat equal generation time (ar: {ar_row['sample_seconds']:.1f}s):")
    for r in rows:
        if "equal_time" in r:
            p = r["equal_time"]
            print(f"  {r['name']:<10} {p['steps']} steps, {p['seconds']:.1f}s: gen ppl "
                  f"{fmt(p['gen_ppl'], '.1f')}, entropy {p['entropy']:.2f}; steps for quality "
                  f"(gen ppl within 10%, entropy within 0.1 of the full steps): "
                  f"{r['steps_for_quality']}")  # fmt: skip
    print("\npublished anchors:")
    for label, ours, ar_ppl in ANCHORS:
        print(f"  {label}: {ours} / {ar_ppl} = {ours / ar_ppl:.2f}x")
    print(
        "ar: exact NLL of tokens 2..L plus the unigram NLL of token 1; "
        "discrete diffusion rows: their bounds (upper bounds); embed/latent: no bound, "
        "'est. nats' is their own held-out training loss (not comparable); "
        f"infill EM: {args.infill_n} spans of {args.infill_span} tokens; samples continue "
        f"{args.prompt_len} tokens of held-out text (latent: unprompted whole windows, the first "
        f"{args.gen_length} tokens kept), the continuation alone scored; broken: samples with "
        "a special token or U+FFFD; x floor: gen ppl over the tempered-unigram floor's at the "
        "same sample entropy (above 1: worse than a unigram of the same diversity; blank: the "
        "entropy is outside the floor's range)."
    )
    out = Path(args.json)
    write_results(  # whole or not at all: Ctrl-C or a full disk after hours of training
        out,
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
    print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        plot(rows, Path(args.plot), f"preset {args.preset}, {args.steps} steps x "
             f"{args.batch_size} x {args.seq_len} tokens each, gen {args.gen_samples}x"
             f"{args.gen_length} after {args.prompt_len} held-out tokens")  # fmt: skip
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    from _common import run

    # SIGINT/SIGTERM: a training run saved its checkpoint first
    run(main, interrupted="rerun the same command (same --work) to resume")
