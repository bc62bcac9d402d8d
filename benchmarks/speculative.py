"""Faster than autoregressive at the same quality? Speculative decoding side by side.

One process, the same prompts, every row against the reference of its (gen_length, batch).
Every row decodes all ``--prompts`` prompts (default: the largest batch), in batches of its
batch size one after another, so batch-1 rows time as many prompts as batch-8 ones:

- ``ar``: the causal checkpoint (``--ar-model``) decoding greedily with its KV cache (the
  reference: tokens/s ratio 1, token identity 1);
- ``diffusion``: the diffusion checkpoint (``--model``, default the shipped demo) with its
  recommended sampling options (``unmask.api.sample_config``: temperature 0.8 in blocks of
  4 for the demo) at one token per step, the plain-diffusion setting of AR-like quality;
- ``spec k=K``: two-model speculative decoding, the diffusion model drafts K tokens per round
  and the causal model verifies them (greedy: output identical to ``ar``), for every
  ``--draft-lengths``, plus adaptive rows (``--thresholds``: a draft ends where the drafter's
  probability drops below the threshold) and ``--draft-cache none`` rows when asked;
- ``hybrid all`` / ``hybrid ends``: a one-model hybrid checkpoint (``--hybrid PATH ...``;
  with several, ``hybrid NAME all`` where NAME is the run's folder),
  decoded by the decoder its checkpoint names (``unmask.api.start``, decoder ``auto``), with
  ``predraft`` ``all`` (TiDAR) and ``ends``, with ``--hybrid-draft-lengths`` a row per
  draft length (``hybrid all n=2``: the first 2 positions of its block) and with
  ``--hybrid-thresholds`` adaptive rows (``hybrid all n=2 thr=0.5``: drafts end before the
  first one under the bar); skipped with a note when not given or not present.

Columns: tok/s (text tokens, cut at EOS, per second) and its ratio to ``ar`` (same prompts,
gen_length and batch); tok/fwd: tokens generated per row, each row's EOS included (what comes
after it is not counted, for any decoder), per forward of its batch, drafter and verifier
both counted. ``ar`` generates one token per forward: 1.00 at batch 1 whether or not a row
ends at EOS. Every row of a batch commits its own accepted length, so a batch runs as many
rounds as its slowest row, and a row that ends early lowers its batch's tok/fwd, ``ar``'s
too (the JSON's ``row_tokens_per_forward`` of a speculative or hybrid row counts each row's
forwards while it decodes: the decoders' own ``tokens_per_forward``). acceptance (drafted
tokens accepted), acc/rd (drafts a row commits per round), gen ppl (continuations given
their prompts under the offline scorer, ``unmask.scoring``, when its model is installed),
dist-2 (distinct word bigrams, pooled over the batch), ident (fraction of generated
positions equal to ``ar``'s greedy tokens; rows are cut at EOS).

The demo models' context is 256 tokens: a requested length that does not fit after the
prompt is cut to the longest multiple of 8 that does, and the table says so.

    python benchmarks/speculative.py --ar-model runs/ar-fim/checkpoint \\
        [--model PATH] [--hybrid PATH] [--json benchmarks/results/speculative.json]
    python benchmarks/speculative.py --ar-model PATH --quick   # does the script run?
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/decoding.py

from _common import (  # noqa: E402
    default_output,
    fill_defaults,
    generated,
    non_negative_int,
    output_file,
    positive_int,
    require_hybrid,
    round_robin,
    write_results,
)
from decoding import fit_lengths, prompt_texts, timed  # noqa: E402

from unmask import api  # noqa: E402
from unmask.api import decode_dtype  # noqa: E402
from unmask.checkpoint import Loaded, load  # noqa: E402
from unmask.commands.demo import asset_path  # noqa: E402
from unmask.config import SampleConfig, resolve_device  # noqa: E402
from unmask.errors import UserError  # noqa: E402
from unmask.evaluate import distinct_n  # noqa: E402
from unmask.sampling import cut_at_eos  # noqa: E402

LENGTH_MULTIPLE = 8
"""Generation lengths are cut to a multiple of this (blocks of 4 for the diffusion row)."""


def identity(ids: list[list[int]], ref: list[list[int]], eos: int | None) -> float:
    """Fraction of the reference's generated positions (cut at EOS) where ``ids`` agree."""
    same = total = 0
    for a, b in zip(ids, ref, strict=True):
        b = cut_at_eos(b, eos)
        total += len(b)
        same += sum(x == y for x, y in zip(a, b, strict=False))
    return same / total if total else 1.0


@dataclass
class Case:
    """One row to time: ``label``, the checkpoint that decodes, its config and drafter."""

    label: str
    loaded: Loaded
    config: SampleConfig
    draft: Loaded | None = None


def build_cases(
    args: argparse.Namespace, g: int, ar: Loaded, diff: Loaded, hybrids: list[tuple[str, Loaded]]
) -> list[Case]:
    """The rows of one generation length ``g``: ar (the reference, first), the diffusion
    row, the spec rows and the hybrid rows."""
    T, seed = args.temperature, (args.seed if args.temperature > 0 else None)
    pen = {"repetition_penalty": args.repetition_penalty,  # the causal rows'
           "no_repeat_ngram_size": args.no_repeat_ngram_size}
    seg = {"segment_length": args.segment_length}
    cfg = SampleConfig(gen_length=g, temperature=T, seed=seed, **pen, **seg)
    cases = [Case("ar", ar, cfg)]
    dcfg = api.sample_config(diff, {"gen_length": g, "steps": g, "seed": args.seed, **seg})
    if not args.no_diffusion_row:
        cases.append(Case("diffusion (recommended)", diff, dcfg))
    specs = [(f"spec k={k}", {"draft_length": k}) for k in args.draft_lengths]
    k_max = max(args.draft_lengths, default=0)
    specs += [
        (f"spec k={k_max} thr={t:g}", {"draft_length": k_max, "draft_threshold": t})
        for t in (args.thresholds if k_max else [])
    ]
    if args.no_cache_row and k_max:
        specs.append((f"spec k={k_max} no cache", {"draft_length": k_max, "draft_cache": "none"}))
    for label, opts in specs:
        sc = SampleConfig(gen_length=g, temperature=T, seed=seed, draft_steps=args.draft_steps,
                          **opts, **pen, **seg)  # fmt: skip
        cases.append(Case(label, ar, sc, draft=diff))
    layouts = product(hybrids, args.predraft, args.hybrid_draft_lengths or [None],
                      [0.0, *args.hybrid_thresholds])  # fmt: skip
    for (name, hybrid), pre, n, thr in layouts:
        hc = SampleConfig(gen_length=g, temperature=T, seed=seed, predraft=pre,
                          draft_length=n, draft_threshold=thr, **pen, **seg)  # fmt: skip
        label = f"{name} {pre}" + ("" if n is None else f" n={n}")
        cases.append(Case(label + (f" thr={thr:g}" if thr else ""), hybrid, hc))
    return cases


def refuse_bad_cases(cases: Sequence[Case], ids: list[list[int]]) -> None:
    """Start every case on ``ids`` without running it: a combination the decoders refuse
    (an unknown predraft, a threshold out of range, a checkpoint of the wrong kind) is one
    ``UserError`` line before anything is timed."""
    for c in cases:
        api.start(c.loaded, ids, c.config, draft=c.draft)


def time_cases(
    cases: Sequence[Case], groups: list[list[list[int]]], repeats: int, device: torch.device
) -> list[tuple[list[Any], list[Any], float]]:
    """(runs, results, median seconds) of each case, each timed run decoding every batch of
    ``groups`` in turn (the same prompts for every row), the repeats round-robin over the
    cases (``round_robin``)."""
    refuse_bad_cases(cases, groups[0])

    def go(c: Case) -> tuple[list[Any], list[Any]]:
        runs = [api.start(c.loaded, ids, c.config, draft=c.draft) for ids in groups]
        return runs, [run.run() for run in runs]

    calls = [lambda c=c: go(c) for c in cases]
    timings = round_robin(calls, repeats, lambda fn: timed(fn, 1, device))
    return [(*out, t) for out, t in timings]


COUNTS = ("verifier_nfe", "drafter_nfe", "drafted", "accepted", "row_rounds", "committed")
"""A speculative or hybrid result's counts, summed over a row's batches."""


def measure(
    case: Case,
    runs: list[Any],
    results: list[Any],
    seconds: float,
    *,
    batch: int,
    ref: dict[str, Any] | None,
    prompts: list[str],
    scorer: Any,
) -> dict[str, Any]:
    """One row's columns from its timed runs (``time_cases``: one run per batch of
    ``batch`` prompts, in order): tokens, forwards and counts summed over the batches."""
    label, loaded, config = case.label, case.loaded, case.config
    eos = loaded.config.eos_id
    gen = [r for res in results for r in res.gen_ids]
    tokens = sum(generated(r, eos) for r in gen) or 1
    made = sum(generated(r, eos, with_eos=True) for r in gen)  # a forward made the EOS too
    texts = [t for res in results for t in res.texts(loaded.tokenizer)]
    nfe = sum(res.nfe for res in results)
    row: dict[str, Any] = {
        "label": label,
        "decoder": runs[0].decoder,
        "gen_length": config.gen_length,
        "batch": batch,
        "prompts": len(gen),
        "temperature": config.temperature,
        "repetition_penalty": config.repetition_penalty,
        "no_repeat_ngram_size": config.no_repeat_ngram_size,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "nfe": nfe,
        "steps": sum(res.steps for res in results),
        "tokens_per_forward": made / batch / max(nfe, 1),
        "gen_ppl": scorer.perplexity(texts, prompts=prompts) if scorer is not None else None,
        "distinct_2": distinct_n(texts, 2),
        "texts": texts,
        "ids": gen,
    }
    for name in COUNTS:
        if hasattr(results[0], name):
            row[name] = sum(getattr(res, name) for res in results)
    if hasattr(results[0], "drafter_cache"):
        row["drafter_cache"] = results[0].drafter_cache
    if hasattr(results[0], "acceptance_rate"):
        row["acceptance"] = row["accepted"] / max(row["drafted"], 1)
        row["acc_per_round"] = row["accepted"] / max(row["row_rounds"], 1)
        # tokens a row commits per forward of either model (SpeculativeResult's, summed)
        row["row_tokens_per_forward"] = (
            row["committed"] / max(row["row_rounds"], 1) * row["steps"] / max(nfe, 1)
        )
    row["ratio"] = row["tokens_per_s"] / ref["tokens_per_s"] if ref else 1.0
    row["identity"] = identity(gen, ref["ids"], eos) if ref else 1.0
    return row


def forward_cost(
    loaded: Loaded, context: int, widths: Sequence[int], repeats: int, batch: int = 1
) -> dict[int, float]:
    """Seconds of one cached forward of ``w`` new positions after ``context`` cached ones, for
    each width: what a verifier round (k + 1 positions) or a cached draft costs against one
    AR step (width 1). Speculative decoding gains only while the tokens a round commits
    exceed the cost of its forwards in AR steps."""
    from unmask.model import KVCache

    model, dev = loaded.model, next(loaded.model.parameters()).device
    steps = {}
    with torch.no_grad():
        for w in widths:
            ids = torch.randint(4, loaded.config.vocab_size, (batch, context + w), device=dev)
            kv = KVCache()
            model(ids[:, :context], cache=kv, start=0)

            def step(kv: Any = kv, ids: Tensor = ids, w: int = w) -> None:
                kv.length = context
                model(ids[:, context:], cache=kv, start=context)

            step()
            steps[w] = step
        timings = round_robin([steps[w] for w in widths], repeats,
                              lambda fn: timed(fn, 1, dev))  # fmt: skip
    return {w: t for w, (_, t) in zip(widths, timings, strict=True)}


HEADER = (
    f"{'gen':>4} {'B':>2} {'row':<30} {'tok/s':>8} {'×AR':>6} {'tok/fwd':>7} {'accept':>6} "
    f"{'acc/rd':>6} {'gen ppl':>8} {'dist-2':>6} {'ident':>6}"
)
LEGEND = (
    "tok/s: text tokens (cut at EOS) per second; tok/fwd: tokens generated per row (its EOS "
    "included) per forward of its batch, both models counted (ar: 1.00 at batch 1)"
)
"""Printed above ``HEADER``: what its two token columns count (module docstring)."""


def _f(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['gen_length']:>4} {r['batch']:>2} {r['label']:<30} {r['tokens_per_s']:>8.1f} "
        f"{r['ratio']:>6.2f} {r['tokens_per_forward']:>7.2f} {_f(r.get('acceptance'), '.2f'):>6} "
        f"{_f(r.get('acc_per_round'), '.2f'):>6} "
        f"{_f(r['gen_ppl'], '.1f'):>8} {r['distinct_2']:>6.3f} {r['identity']:>6.3f}",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default=str(asset_path("demo")),
        help="diffusion checkpoint: the drafter and the plain-diffusion row "
        "(default: the shipped demo)",
    )
    ap.add_argument(
        "--ar-model",
        required=True,
        help="causal checkpoint of the same tokenizer: the reference and verifier",
    )
    ap.add_argument(
        "--hybrid", nargs="+", default=[],
        help="one-model hybrid checkpoints (rows skipped without one); with several, each "
        "row is labelled with its run's folder name",
    )  # fmt: skip
    ap.add_argument(
        "--predraft", nargs="+", default=["all", "ends"], help="hybrid rows: predraft layouts"
    )
    ap.add_argument(
        "--hybrid-draft-lengths", type=positive_int, nargs="*", default=[],
        help="hybrid rows: draft lengths (the first n positions of its block; none: the "
        "checkpoint's whole block)",
    )  # fmt: skip
    ap.add_argument(
        "--hybrid-thresholds", type=float, nargs="*", default=[],
        help="hybrid rows: draft_threshold values (adaptive draft length; a row per value "
        "for every layout and draft length)",
    )  # fmt: skip
    ap.add_argument("--no-diffusion-row", action="store_true", help="skip the plain-diffusion row")
    ap.add_argument("--gen-lengths", type=positive_int, nargs="+", default=None,
                    help="default 256 512 (--quick: 32)")  # fmt: skip
    ap.add_argument(
        "--segment-length", type=positive_int, default=None, metavar="N",
        help="every row in segments of N tokens over a sliding window "
             "(SampleConfig.segment_length): lengths past the context run instead of being cut",
    )
    ap.add_argument("--batches", type=positive_int, nargs="+", default=None,
                    help="default 1 8 (--quick: 1 2)")  # fmt: skip
    ap.add_argument(
        "--prompts", type=positive_int, default=None,
        help="prompts every row decodes, in batches of each --batches size (a multiple of "
        "each; default: the largest batch)",
    )  # fmt: skip
    ap.add_argument("--prompt-words", type=positive_int, default=None,
                    help="default 8 (--quick: 4)")  # fmt: skip
    ap.add_argument(
        "--draft-lengths", type=positive_int, nargs="*", default=None,
        help="spec rows (none: no spec row; default 4 8, --quick: 4)",
    )
    ap.add_argument(
        "--thresholds",
        type=float,
        nargs="*",
        default=None,
        help="adaptive rows: draft_threshold values, with the longest draft length (default "
        "0.5)",
    )
    ap.add_argument("--draft-steps", type=positive_int, default=1, help="denoising steps per draft")
    ap.add_argument(
        "--no-cache-row", action="store_true", help="also a row with the drafter's prefix cache off"
    )
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="of the ar, spec and hybrid rows (0 = greedy: identity is exact-match)",
    )
    ap.add_argument(
        "--repetition-penalty", type=float, default=1.0,
        help="of the ar, spec and hybrid rows (1 = off; the causal checkpoints' recommendation "
             "is in their sample_defaults)",
    )  # fmt: skip
    ap.add_argument(
        "--no-repeat-ngram-size", type=non_negative_int, default=0,
        help="of the ar, spec and hybrid rows (0 = off)",
    )  # fmt: skip
    ap.add_argument(
        "--repeats", type=positive_int, default=1,
        help="timed runs per row (median), taken round-robin over the rows",
    )  # fmt: skip
    ap.add_argument(
        "--score",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gen ppl with the offline scorer (default: on when installed)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="the weights' dtype of every model (docs/sampling.md, 'Precision')")
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch threads (0 = torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=output_file,
                    default=str(default_output("speculative.json")),
                    help="write the results here (default: runs/bench/speculative.json; "
                    "--json benchmarks/results/NAME.json updates a committed file)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="gen 32, batches 1 and 2, draft length 4, 4 prompt words, no scorer (the defaults "
        "of the flags not given)",
    )
    args = ap.parse_args(argv)
    fill_defaults(args, normal={"gen_lengths": [256, 512], "batches": [1, 8], "prompt_words": 8,
                                "draft_lengths": [4, 8], "thresholds": [0.5]},
                  quick={"gen_lengths": [32], "batches": [1, 2], "prompt_words": 4,
                         "draft_lengths": [4]})  # fmt: skip
    if args.quick:
        args.score = bool(args.score)
    return args


def load_scorer(args: argparse.Namespace, device: torch.device) -> tuple[Any, str]:
    if args.score is False:
        return None, "gen ppl: off (--no-score)"
    from unmask.scoring import ReferenceScorer

    try:
        return ReferenceScorer.from_smollm2(device=device), "gen ppl: SmolLM2-135M-Instruct"
    except UserError as e:
        if args.score:
            raise
        return None, f"gen ppl: n/a ({e})"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = decode_dtype(args.dtype, device, None)
    diff = load(args.model, device=str(device), dtype=dtype)
    ar = load(args.ar_model, device=str(device), dtype=dtype)
    for m in (diff, ar):
        m.model.eval()
    notes: list[str] = []
    hybrids: list[tuple[str, Loaded]] = []
    for path in args.hybrid:
        if not Path(path).exists():
            notes.append(f"hybrid: {path} skipped (not present)")
            continue
        h = load(path, device=str(device), dtype=dtype)
        require_hybrid(h, f"--hybrid {path}")  # not "predraft applies to ..." (a default)
        h.model.eval()
        name = Path(path).name if Path(path).name != "checkpoint" else Path(path).parent.name
        hybrids.append(("hybrid" if len(args.hybrid) == 1 else f"hybrid {name}", h))
    if not args.hybrid:
        notes.append("hybrid: skipped (no --hybrid given)")
    n_prompts = args.prompts or max(args.batches)
    if any(n_prompts % b for b in args.batches):
        raise UserError(f"--prompts {n_prompts} must be a multiple of every batch {args.batches}")
    prompts_all = prompt_texts(n_prompts, args.prompt_words)
    context = min(m.config.max_seq_len for m in (diff, ar, *(h for _, h in hybrids)))
    P = max(len(ar.tokenizer.encode(p)) for p in prompts_all)
    if args.segment_length is None:
        lengths, fit_notes = fit_lengths(args.gen_lengths, context, P, LENGTH_MULTIPLE)
        notes += fit_notes
    else:  # any length: segments over a sliding window (SampleConfig.segment_length)
        lengths = list(dict.fromkeys(args.gen_lengths))
        notes.append(f"segments of {args.segment_length} tokens (--segment-length)")
    # every length's rows refused or not before minutes of forward costs and other rows
    cases_of = {g: build_cases(args, g, ar, diff, hybrids) for g in lengths}
    for cases in cases_of.values():
        refuse_bad_cases(cases, [ar.tokenizer.encode(prompts_all[0])])
    scorer, note = load_scorer(args, device)  # after: SmolLM2 takes a while to load
    notes.append(note)
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}; "
        f"drafter {diff.path}, verifier {ar.path}; prompts {prompts_all}"
    )
    for n in notes:
        print(f"note: {n}")
    # warm-up: first calls pay one-time costs
    warm = SampleConfig(gen_length=8, temperature=0.0, draft_length=4)
    api.start(ar, [ar.tokenizer.encode(prompts_all[0])], warm, draft=diff).run()
    widths = [1, 2, 5, 9, 17]
    costs = {}
    for name, m in (("verifier", ar), ("drafter", diff)):
        c = forward_cost(m, min(128, context - max(widths)), widths, max(3, args.repeats))
        costs[name] = {str(w): t for w, t in c.items()}
        print(
            f"{name} forward at 128 cached positions, batch 1: "
            + ", ".join(f"{w} pos {t * 1e3:.1f} ms ({t / c[1]:.2f}x)" for w, t in c.items())
        )
    rows: list[dict[str, Any]] = []
    print(LEGEND)
    print(HEADER, flush=True)
    for g in lengths:
        for b in args.batches:
            prompts = prompts_all  # every row decodes them all, in batches of b
            ids = [ar.tokenizer.encode(p) for p in prompts]
            groups = [ids[i : i + b] for i in range(0, len(ids), b)]
            cases = cases_of[g]
            timings = time_cases(cases, groups, args.repeats, device)
            kw = {"batch": b, "prompts": prompts, "scorer": scorer}
            ref = measure(cases[0], *timings[0], ref=None, **kw)
            done = [ref]
            done += [
                measure(c, *t, ref=ref, **kw) for c, t in zip(cases[1:], timings[1:], strict=True)
            ]
            for r in done:
                print_row(r)
            rows += done
    out = {
        "meta": {
            "distinct_2": "pooled over the batch (one count over all texts)",
            "torch": torch.__version__,
            "device": str(device),
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "drafter": str(diff.path),
            "verifier": str(ar.path),
            "hybrid": [str(h.path) for _, h in hybrids],
            "prompts": prompts_all,
            "notes": notes,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "forward_cost_s": costs,
        "rows": rows,
    }
    write_results(args.json, out, indent=1)
    print(f"wrote {Path(args.json)}")


if __name__ == "__main__":
    from _common import run

    run(main)
