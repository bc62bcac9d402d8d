"""Infilling on held-out text: the diffusion model's commit policies vs an AR
fill-in-the-middle model.

The held-out text is the validation split of the packaged corpus, prepared with the
diffusion model's tokenizer exactly as the demo model was trained (``val_fraction`` 0.02,
seed 0), so no window was seen in training. For each span size (1, 4, 16, 32 tokens) it
draws ``--n`` windows of the model's context (inside one split block) and one span per
window, at least one token from either edge and holding well-formed UTF-8; the span is
masked and refilled from the text on both sides:

- fixed length (the gap has the true length): token accuracy, exact match and seconds per
  fill for the diffusion model with each policy, through ``unmask.infill.fill_plan``
  (``llada`` one token per step, ``llada`` two per step (steps = n/2), ``threshold`` 0.9),
  and for the ``--ar-model`` AR-FIM model (``unmask.infill.fill_middle_ids`` with exactly n
  tokens), "n/a" without one;
- variable length: the gap is ``[MASK:a-b]`` with ``b - a = 4`` and the true length at a
  random place inside; the diffusion model picks the length by ELBO (length mode ``elbo``:
  all 5 lengths filled once, llada one token per step, the choice by each ``length_score``:
  rows ``diffusion (ELBO)``, whole text, and ``diffusion (ELBO/context)``, the given text
  only, read from the same candidates, and ``diffusion (ELBO/tok)``, per token, a run of its
  own, scored as ``--length-score per_token`` scores, ``SHARED``) and, when it was trained with
  ``--empty-rate`` (``config.empty_id``), also in one pass of b slots whose unused trailing
  slots hold ``[EMPTY]`` (length mode ``empty``; "n/a" otherwise); the AR model by where it
  writes EOS. Reported: how often the chosen length is the true one, the mean absolute and
  signed length error, exact match, seconds. ``--no-fixed`` runs only these rows.

Every method sees the same windows and spans; times are means over the fills of one run
(batch 1), with the ratio to the diffusion model's one-token-per-step fill.

    python benchmarks/infill.py [--model PATH] [--ar-model PATH] [--n 50] [--json out.json]
    python benchmarks/infill.py --quick              # a seconds-long check (spans 1 and 4, n=2)

A full run writes ``runs/bench/infill.json`` unless ``--json`` says otherwise (``--json
benchmarks/results/infill.json`` updates the committed results); a ``--quick`` run writes only
where ``--json`` says.

``--write-gaps FILE`` also writes the drawn gaps as a gap set (``unmask.gapset``) that
``unmask eval RUN --gaps FILE`` scores.

``--data DIR`` uses a dataset already prepared with the model's tokenizer instead of
preparing the corpus again; ``--quick`` prepares only the start of the corpus (the same
split rule, so fewer validation blocks).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import (
    default_output,
    non_negative_int,
    output_file,
    positive_int,
    write_results,
)

from unmask.checkpoint import load
from unmask.commands.demo import asset_path
from unmask.config import SampleConfig
from unmask.data import SPLIT_BLOCK, TokenDataset, prepare
from unmask.errors import UserError
from unmask.gapset import SLACK, GapFiller, GapSample, make_gap_set, write_gap_set
from unmask.infill import InfillOptions, fill_middle_ids

RESULTS = default_output("infill.json")
"""Where a full run writes its results by default."""
SPANS = (1, 4, 16, 32)
QUICK_SPANS = (1, 4)
QUICK_CHARS = 400_000
"""Characters of the corpus that ``--quick`` prepares."""
MARGIN = 8
QUICK_WINDOW = 96
"""Longest window of ``--quick``."""
"""Window = the model's context minus this (room for a longer variable gap and the AR sentinels)."""

POLICIES: dict[str, Callable[[int], SampleConfig]] = {
    "llada 1/step": lambda n: SampleConfig(steps=n),
    "llada 2/step": lambda n: SampleConfig(steps=max(1, n // 2)),
    "threshold 0.9": lambda n: SampleConfig(policy="threshold", threshold=0.9),
}
POLICY_NOTES = {
    "llada 1/step": "policy llada, steps = n (one token per step)",
    "llada 2/step": "policy llada, steps = n // 2 (two tokens per step)",
    "threshold 0.9": "policy threshold, threshold 0.9 (Fast-dLLM)",
}
AR = "AR-FIM"


def held_out(tokenizer_path: Path, tmp: Path, *, quick: bool) -> TokenDataset:
    """The validation split of the packaged corpus, prepared with ``tokenizer_path``."""
    corpus: Path = asset_path("web-bible.txt.gz")
    if quick:
        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            text = f.read(QUICK_CHARS)
        corpus = tmp / "corpus-start.txt"
        corpus.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    data = tmp / "bible"
    prepare(
        [corpus], data, tokenizer=str(tokenizer_path), val_fraction=0.02, seed=0, progress=False
    )
    return TokenDataset(data, "val")


def check_vocab(data_tok: Any, model_tok: Any, what: str) -> None:
    """``UserError`` unless every token of ``data_tok`` has the same id in ``model_tok``."""
    vocab = data_tok.hf.get_vocab(with_added_tokens=True)
    bad = [t for t, i in vocab.items() if model_tok.token_to_id(t) != i]
    if bad:
        raise UserError(
            f"{what}'s tokenizer does not match the data "
            f"({len(bad)} tokens differ, e.g. {bad[0]!r}); "
            "both models must use the tokenizer the data was prepared with"
        )


Method = Callable[[GapSample], tuple[list[int], int]]
"""A filler: sample -> (the gap's tokens, model evaluations)."""


def measure(fn: Method, batch: list[GapSample]) -> list[tuple[list[int], int, float]]:
    """(tokens, nfe, seconds) per sample; one untimed warm-up fill first (compiles gap automata)."""
    fn(batch[0])
    out = []
    for x in batch:
        t0 = time.perf_counter()
        got, nfe = fn(x)
        out.append((got, nfe, time.perf_counter() - t0))
    return out


def fixed_methods(diff: GapFiller, ar_model: Any) -> dict[str, Method]:
    def diffusion(make: Callable[[int], SampleConfig]) -> Method:
        def fill(x: GapSample) -> tuple[list[int], int]:
            r = diff(x, x.length, x.length, make(x.length))
            return r.gaps[0].tokens, r.nfe

        return fill

    methods = {name: diffusion(make) for name, make in POLICIES.items()}
    if ar_model is not None:

        def fim(x: GapSample) -> tuple[list[int], int]:
            r = fill_middle_ids(
                ar_model, x.prefix, x.suffix, max_new_tokens=x.length, min_new_tokens=x.length
            )
            return r.tokens, r.nfe

        methods[AR] = fim
    return methods


ELBO = {"total": "diffusion (ELBO)", "per_token": "diffusion (ELBO/tok)",
        "context": "diffusion (ELBO/context)"}
"""Row names of the ELBO length search by ``InfillOptions.length_score``: one fill of every
candidate length per gap, the choice made from its candidates by each score."""
SHARED = ("total", "context")
"""The scores read from one run: ``total`` and ``context`` are terms of the same continuous-time
bound (``sequence_elbo_terms``), so the run of either ranks its candidates by the other too.
``per_token`` is scored its own way (``unmask.infill.fill.paired_per_token_terms``: LLaDA's
count estimator, more copies for close calls), so its row is a run of its own: read from the
``total`` run's candidates it was the continuous-time bound per token, a choice that
``--length-score per_token`` never makes, at the other run's NFE."""
EMPTY = "diffusion (EMPTY)"


def chosen(result: Any, score: str) -> list[int]:
    """The gap's tokens in the candidate of ``result`` (an ``InfillResult``) that ``score``
    picks, as ``unmask.infill`` would with that ``length_score``."""
    return min(result.candidates, key=lambda c: c.score(score)).gaps[0].tokens


def variable_methods(diff: GapFiller, ar_model: Any) -> dict[str, Method]:
    def diffusion(mode: str) -> Method:
        def fill(x: GapSample) -> tuple[list[int], int]:
            r = diff(x, x.lo, x.hi, SampleConfig(steps=x.hi), mode)
            return r.gaps[0].tokens, r.nfe

        return fill

    def elbo(x: GapSample) -> tuple[Any, int]:  # the whole result: the SHARED scores' choices
        r = diff(x, x.lo, x.hi, SampleConfig(steps=x.hi), "elbo")
        return r, r.nfe

    per_token = GapFiller(diff.model, diff.tok, replace(diff.options, length_score="per_token"))

    def elbo_per_token(x: GapSample) -> tuple[list[int], int]:  # its own scoring, as unmask's
        r = per_token(x, x.lo, x.hi, SampleConfig(steps=x.hi), "elbo")
        return r.gaps[0].tokens, r.nfe

    methods: dict[str, Method] = {"elbo": elbo,  # type: ignore[dict-item]
                                  ELBO["per_token"]: elbo_per_token}
    if diff.has_empty:
        methods[EMPTY] = diffusion("empty")
    if ar_model is not None:

        def fim(x: GapSample) -> tuple[list[int], int]:
            r = fill_middle_ids(
                ar_model, x.prefix, x.suffix, max_new_tokens=x.hi, min_new_tokens=x.lo
            )
            return r.tokens, r.nfe

        methods[AR + " (EOS)"] = fim
    return methods


def run_fixed(
    samples: dict[int, list[GapSample]], diff: GapFiller, ar_model: Any
) -> list[dict[str, Any]]:
    rows = []
    for s, batch in samples.items():
        base = None
        for name, fn in fixed_methods(diff, ar_model).items():
            res = measure(fn, batch)
            correct = sum(
                sum(a == b for a, b in zip(got, x.truth, strict=False))
                for (got, _, _), x in zip(res, batch, strict=True)
            )
            exact = sum(got == x.truth for (got, _, _), x in zip(res, batch, strict=True))
            sec = statistics.fmean(r[2] for r in res)
            base = sec if base is None else base
            rows.append(
                {
                    "method": name,
                    "span": s,
                    "n": len(batch),
                    "token_acc": correct / (s * len(batch)),
                    "exact": exact / len(batch),
                    "nfe": statistics.fmean(r[1] for r in res),
                    "s_per_fill": sec,
                    "time_ratio": sec / base,
                }
            )
        if ar_model is None:
            rows.append(
                {
                    "method": AR,
                    "span": s,
                    "n": 0,
                    "token_acc": None,
                    "exact": None,
                    "nfe": None,
                    "s_per_fill": None,
                    "time_ratio": None,
                }
            )
    return rows


def run_variable(
    samples: dict[int, list[GapSample]], diff: GapFiller, ar_model: Any
) -> list[dict[str, Any]]:
    rows = []
    methods = variable_methods(diff, ar_model)
    for s, batch in samples.items():
        res = measure(methods["elbo"], batch)
        for score, name in ELBO.items():
            if score in SHARED:
                got = [(chosen(r, score), nfe, sec) for r, nfe, sec in res]
            else:
                got = measure(methods[name], batch)
            rows.append(_variable_row(name, s, got, batch))
        for name in (EMPTY, AR + " (EOS)"):
            if name not in methods:  # no [EMPTY] token / no AR model
                rows.append(
                    {
                        "method": name,
                        "span": s,
                        "n": 0,
                        "length_match": None,
                        "mean_abs_len_err": None,
                        "mean_len_err": None,
                        "exact": None,
                        "nfe": None,
                        "s_per_fill": None,
                    }
                )
                continue
            rows.append(_variable_row(name, s, measure(methods[name], batch), batch))
    return rows


def _variable_row(
    name: str, s: int, res: list[tuple[list[int], int, float]], batch: list[GapSample]
) -> dict[str, Any]:
    pairs = list(zip(res, batch, strict=True))
    return {
        "method": name,
        "span": s,
        "n": len(batch),
        "length_match": sum(len(got) == x.length for (got, _, _), x in pairs) / len(batch),
        "mean_abs_len_err": statistics.fmean(abs(len(got) - x.length) for (got, _, _), x in pairs),
        "mean_len_err": statistics.fmean(len(got) - x.length for (got, _, _), x in pairs),
        "exact": sum(got == x.truth for (got, _, _), x in pairs) / len(batch),
        "nfe": statistics.fmean(r[1] for r in res),
        "s_per_fill": statistics.fmean(r[2] for r in res),
    }


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def print_tables(fixed: list[dict[str, Any]], variable: list[dict[str, Any]]) -> None:
    print("\nfixed-length gaps (the gap has the true length)")
    print(
        f"{'method':<16} {'span':>4} {'n':>4} {'tok acc':>8} {'exact':>6} {'NFE':>6} "
        f"{'s/fill':>8} {'× time':>7}"
    )
    for r in fixed:
        print(
            f"{r['method']:<16} {r['span']:>4} {r['n']:>4} {_f(r['token_acc'], '.3f'):>8} "
            f"{_f(r['exact'], '.2f'):>6} {_f(r['nfe'], '.1f'):>6} {_f(r['s_per_fill'], '.4f'):>8} "
            f"{_f(r['time_ratio'], '.2f'):>7}"
        )
    print(f"\nvariable-length gaps [MASK:a-b], b - a = {SLACK - 1}, true length inside")
    print(
        f"{'method':<24} {'span':>4} {'n':>4} {'len match':>9} {'|Δlen|':>7} {'Δlen':>6} "
        f"{'exact':>6} "
        f"{'NFE':>6} {'s/fill':>8}"
    )
    for r in variable:
        print(
            f"{r['method']:<24} {r['span']:>4} {r['n']:>4} {_f(r['length_match'], '.2f'):>9} "
            f"{_f(r['mean_abs_len_err'], '.2f'):>7} {_f(r['mean_len_err'], '+.2f'):>6} "
            f"{_f(r['exact'], '.2f'):>6} "
            f"{_f(r['nfe'], '.1f'):>6} "
            f"{_f(r['s_per_fill'], '.4f'):>8}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=str(asset_path("demo")), help="diffusion checkpoint (default: the demo)"
    )
    ap.add_argument(
        "--ar-model", help="AR-FIM checkpoint (objective ar, --fim-rate > 0); n/a without one"
    )
    ap.add_argument(
        "--n", type=positive_int, default=None,
        help="samples per span size (default 50, 2 with --quick)"
    )
    ap.add_argument(
        "--spans", type=positive_int, nargs="+", default=None,
        help=f"span sizes (default {list(SPANS)})"
    )
    ap.add_argument(
        "--window", type=positive_int, default=None,
        help=f"window tokens (default: context - {MARGIN}, at most {SPLIT_BLOCK}: one block of "
             "the split)"
    )
    ap.add_argument(
        "--data", help="dataset already prepared with the model's tokenizer (skips preparing)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long check: spans 1 and 4, n=2, windows <= 96, corpus start",
    )
    ap.add_argument(
        "--elbo-samples",
        type=int,
        default=None,
        help="noisy copies per candidate length (default: InfillOptions' 16; 4 with --quick)",
    )
    ap.add_argument(
        "--write-gaps",
        metavar="FILE",
        help="also write the drawn gaps (all span sizes) as a gap set for `unmask eval --gaps`",
    )
    ap.add_argument(
        "--no-fixed", action="store_true", help="only the variable-length rows (length choice)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch CPU threads (0 = default)")  # fmt: skip
    ap.add_argument(
        "--json", type=output_file,
        help=f"write results here (default: {RESULTS.relative_to(RESULTS.parents[2])} "
        "for a full run, nowhere for --quick)",
    )
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    n = args.n if args.n is not None else (2 if args.quick else 50)
    spans = tuple(args.spans) if args.spans else (QUICK_SPANS if args.quick else SPANS)
    if n < 1 or min(spans) < 1:
        raise UserError("--n and --spans must be positive")
    t_start = time.perf_counter()

    m = load(args.model, device=args.device)
    if m.config.attention == "causal":
        raise UserError(
            f"{args.model} is a causal model; pass it as --ar-model and a diffusion model "
            f"as --model"
        )
    ar = load(args.ar_model, device=args.device) if args.ar_model else None
    if ar is not None and not ar.config.has_fim:
        raise UserError(
            f"{args.ar_model} was not trained for fill-in-the-middle (no fim ids in config.json)"
        )
    ctx = m.config.max_seq_len if ar is None else min(m.config.max_seq_len, ar.config.max_seq_len)
    # within one block of the split (make_gap_set refuses a window across blocks): Dream's and
    # LLaDA 2's contexts are longer than a block
    window = args.window or min(ctx - MARGIN, QUICK_WINDOW if args.quick else SPLIT_BLOCK)
    if window + SLACK - 1 > m.config.max_seq_len or (
        ar is not None and window + 3 + SLACK - 1 > ar.config.max_seq_len
    ):
        raise UserError(
            f"--window {window} leaves no room for a variable gap (and the AR sentinels)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            val = TokenDataset(args.data, "val")
        else:
            val = held_out(m.path / "tokenizer.json", Path(tmp), quick=args.quick)
        check_vocab(val.tokenizer(), m.tokenizer, args.model)
        if ar is not None:
            check_vocab(val.tokenizer(), ar.tokenizer, args.ar_model)
        samples = make_gap_set(
            val, m.tokenizer, window=window, spans=spans, n=n, seed=args.seed, block=SPLIT_BLOCK
        )
        n_val = val.n_tokens
    if args.write_gaps:
        written = write_gap_set(
            args.write_gaps, [x for b in samples.values() for x in b], m.tokenizer
        )
        print(f"gap set: {written}")
    params = sum(p.numel() for p in m.model.parameters()) / 1e6
    print(
        f"diffusion {args.model}: {params:.2f}M params, context {m.config.max_seq_len}; AR-FIM: "
        f"{args.ar_model or 'n/a'}; {n_val:,} held-out tokens, windows of {window}, "
        f"n={n} per span, "
        f"threads {torch.get_num_threads()}"
    )
    elbo_samples = args.elbo_samples or (4 if args.quick else InfillOptions().elbo_samples)
    options = InfillOptions(max_candidates=SLACK, elbo_samples=elbo_samples)
    diff = GapFiller(m.model, m.tokenizer, options)
    print(
        f"variable gaps: diffusion scores all {SLACK} lengths by ELBO with {elbo_samples} "
        f"noisy copies each"
        + (
            "; and fills b slots in one pass with [EMPTY]"
            if diff.has_empty
            else "; no [EMPTY] token (n/a)"
        )
    )
    ar_model = ar.model if ar is not None else None
    with torch.no_grad():
        fixed = [] if args.no_fixed else run_fixed(samples, diff, ar_model)
        variable = run_variable(samples, diff, ar_model)
    print_tables(fixed, variable)
    total = time.perf_counter() - t_start
    print(f"\n{total:.1f} s in all")
    out = Path(args.json) if args.json else (None if args.quick else RESULTS)
    if out is not None:
        write_results(  # whole or not at all: a cut write left half of results/infill.json
            out,
            {
                "model": args.model,
                "ar_model": args.ar_model,
                "window": window,
                "n": n,
                "spans": list(spans),
                "seed": args.seed,
                "quick": args.quick,
                "elbo_samples": elbo_samples,
                "held_out_tokens": n_val,
                "slack": SLACK,
                "empty_mode": diff.has_empty,
                "threads": torch.get_num_threads(),
                "policies": POLICY_NOTES,
                "fixed": fixed,
                "variable": variable,
                "seconds": total,
            },
            indent=2,
        )
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
