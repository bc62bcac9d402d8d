"""Fast decoding side by side: commit policies × KV caches × lengths, speed and sample quality.

One run, one table per model, every row compared with the reference baseline of the same
model and length: LLaDA committing one token per step with no cache (semi-autoregressive
blocks of ``--block-length`` for every row, so the rows differ only in policy and cache).

Models:

- the demo checkpoint (``--model``, default the packaged ``unmask/assets/demo``): trained,
  so the quality columns mean something. Its context is 256 tokens: a requested length
  that does not fit after the prompt is cut to the longest multiple of the block length
  that does, and the table says so (with ``--segment-length N`` every length runs, in
  segments of N tokens over a sliding window: ``SampleConfig.segment_length``);
- a randomly initialised bidirectional model of ``--speed-preset`` (default ``small``) with
  ``max_seq_len`` 1024 and the demo tokenizer: pure speed at longer lengths. Its
  confidences are near uniform, so the parallel policies commit about one token per step
  there; it measures what the caches save per forward, not what the policies save;
- optionally an autoregressive (causal) checkpoint (``--ar-model``) decoding the same
  prompts and lengths with its KV cache;
- optionally a distilled student of the ``--model`` teacher (``--student``, from ``unmask
  distill``): the same policies and caches, then a teacher-vs-student table (each model's
  best row: the fastest whose gen ppl is within 10% and entropy within 5% of the teacher's
  one-token-per-step baseline; tokens per forward, tokens/s ratios to that baseline and to
  the AR model) and a quality-speed frontier PNG (``--frontier``; gen ppl vs tokens/s, or
  entropy when no scorer is installed, one curve per model).

Columns: NFE (model calls), NFE÷ and speed-up (baseline NFE / NFE, baseline seconds /
seconds), tok/s (positions decoded per second, the whole batch: batch × gen_length for a
diffusion row, post-EOS padding included, as the committed results count it; batch × steps
for an AR row, which stops when every row has ended; the JSON adds ``tokens_per_s_to_eos``,
the tokens before each row's first EOS per second, the same definition for both), gen ppl
(generative perplexity of the continuations given their prompts under SmolLM2-135M, when the
``score`` extra is installed; docs/evaluation.md), entropy (mean unigram entropy of the
generated ids, nats; a drop flags repetition), dist-2 (distinct word bigrams, pooled over
the batch: one count over all texts, not a mean per text),
agree (fraction of generated positions equal to the baseline's tokens).

    python benchmarks/decoding.py [--model PATH] [--ar-model PATH] \
        [--json benchmarks/results/decoding.json]
    python benchmarks/decoding.py --quick   # a tiny subset in seconds: does the script run?
    python benchmarks/decoding.py --model TEACHER --student runs/distilled --ar-model AR \
        --speed-preset none --frontier docs/distill_frontier.png --json RESULT.json
"""

from __future__ import annotations

import argparse
import gzip
import math
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import fill_defaults, json_text, non_negative_int, output_file, positive_int

from unmask import api
from unmask.checkpoint import Loaded, load
from unmask.commands.demo import asset_path
from unmask.config import MODEL_PRESETS, ModelConfig, SampleConfig, model_preset, resolve_device
from unmask.errors import UserError
from unmask.evaluate import distinct_n, unigram_entropy
from unmask.model import Transformer
from unmask.sampling import cut_at_eos


@dataclass(frozen=True)
class Policy:
    """One commit policy setting of the table."""

    label: str
    policy: str
    tokens_per_step: int = 1
    """``llada`` only: steps = gen_length / tokens_per_step (rounded to a multiple of the
    blocks)."""
    threshold: float = 0.9
    factor: float = 1.0
    entropy_bound: float = 0.1

    def sample_config(
        self,
        gen_length: int,
        block_length: int,
        cache: str,
        temperature: float = 0.0,
        seed: int = 0,
        segment_length: int | None = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> SampleConfig:
        num_blocks = gen_length // block_length
        steps = max(num_blocks, gen_length // self.tokens_per_step // num_blocks * num_blocks)
        return SampleConfig(
            gen_length=gen_length,
            steps=steps,
            block_length=block_length,
            policy=self.policy,
            threshold=self.threshold,
            factor=self.factor,
            entropy_bound=self.entropy_bound,
            cache=cache,
            temperature=temperature,
            seed=seed if temperature > 0 else None,
            segment_length=segment_length,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )


POLICY_SET = (
    Policy("llada 1/step", "llada"),  # the reference baseline (with cache none)
    Policy("llada 2/step", "llada", tokens_per_step=2),
    Policy("llada 4/step", "llada", tokens_per_step=4),
    Policy("llada 8/step", "llada", tokens_per_step=8),
    Policy("threshold .9", "threshold", threshold=0.9),
    Policy("threshold .7", "threshold", threshold=0.7),
    Policy("threshold .5", "threshold", threshold=0.5),
    Policy("factor 1", "factor", factor=1.0),
    Policy("entropy .1", "entropy", entropy_bound=0.1),
)
CACHES = ("none", "prefix", "dual")


@dataclass
class Section:
    """One model's table."""

    name: str
    model: Any
    tokenizer: Any
    config: ModelConfig
    trained: bool
    notes: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Generation lengths that fit the model (``plan``)."""
    prompt_ids: list[list[int]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def plan(self, prompts: list[str], args: argparse.Namespace) -> None:
        """Encode the prompts and fit the requested lengths into the model's context."""
        self.prompt_ids = [self.tokenizer.encode(p) for p in prompts]
        P = max(len(r) for r in self.prompt_ids)
        if args.segment_length is not None:  # any length: segments of the sliding window
            self.lengths = list(dict.fromkeys(args.gen_lengths))
            self.notes.append(f"segments of {args.segment_length} tokens (--segment-length)")
            return
        self.lengths, notes = fit_lengths(
            args.gen_lengths, self.config.max_seq_len, P, args.block_length
        )
        self.notes += notes


def prompt_texts(n: int, words: int) -> list[str]:
    """``n`` prompts: the first ``words`` words of verses spread evenly over the packaged corpus."""
    with gzip.open(asset_path("web-bible.txt.gz"), "rt", encoding="utf-8") as f:
        lines = [ln.split() for ln in f.read().splitlines()[1:]]  # line 0 is the preface
    lines = [ln for ln in lines if len(ln) >= words]
    stride = max(1, len(lines) // (n + 1))
    return [" ".join(lines[(i + 1) * stride][:words]) for i in range(n)]


def fit_lengths(
    requested: Sequence[int], max_seq_len: int, prompt_len: int, block: int
) -> tuple[list[int], list[str]]:
    """Generation lengths that fit ``max_seq_len`` after the prompt (cut to a multiple of
    ``block``)."""
    used: list[int] = []
    notes: list[str] = []
    for g in requested:
        fits = g if prompt_len + g <= max_seq_len else (max_seq_len - prompt_len) // block * block
        if fits != g:
            notes.append(
                f"gen_length {g} does not fit max_seq_len {max_seq_len} after a {prompt_len}-token "
                f"prompt: {'using ' + str(fits) if fits > 0 else 'skipped'}"
            )
        if fits > 0 and fits not in used:
            used.append(fits)
    return used, notes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, repeats: int, device: torch.device) -> tuple[Any, float]:
    """(last result, median seconds of ``repeats`` calls)."""
    times, out = [], None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def quality(
    texts: list[str], ids: list[list[int]], prompts: list[str], scorer: Any
) -> dict[str, Any]:
    return {
        "gen_ppl": scorer.perplexity(texts, prompts=prompts) if scorer is not None else None,
        "entropy": unigram_entropy(ids),
        "distinct_2": distinct_n(texts, 2),
        "texts": texts,
    }


def _loaded(sec: Section) -> Loaded:
    """The section's model as a loaded checkpoint, for ``unmask.api``."""
    return Loaded(model=sec.model, tokenizer=sec.tokenizer, config=sec.config, path=Path(sec.name))


def run_section(
    sec: Section,
    prompts: list[str],
    args: argparse.Namespace,
    policies: Sequence[Policy],
    caches: Sequence[str],
    scorer: Any,
    device: torch.device,
) -> None:
    cfg, tok, ids = sec.config, sec.tokenizer, sec.prompt_ids
    loaded = _loaded(sec)
    P = max(len(r) for r in ids)
    # first calls pay one-time costs (allocations, RoPE tables): the shortest length the table
    # runs, one step a block (two blocks of --block-length did not fit every context that the
    # lengths fit: --block-length 128 on the demo's 256 refused the run before its first row)
    warm_length = min(sec.lengths, default=0)
    for cache in caches if warm_length else ():
        warm = SampleConfig(
            gen_length=warm_length, steps=max(1, warm_length // args.block_length),
            block_length=args.block_length, cache=cache, segment_length=args.segment_length,
        )
        api.start(loaded, ids, warm).run()
    for gen_length in sec.lengths:
        base: dict[str, Any] | None = None
        base_tokens: torch.Tensor | None = None
        combos = [(policies[0], "none")] + [
            (p, c) for p in policies for c in caches if (p, c) != (policies[0], "none")
        ]
        for pol, cache in combos:
            sc = pol.sample_config(
                gen_length, args.block_length, cache, args.temperature, args.seed,
                args.segment_length, args.repetition_penalty, args.no_repeat_ngram_size,
            )

            def run(sc: SampleConfig = sc) -> Any:
                return api.start(loaded, ids, sc).run()

            res, sec_s = timed(run, args.repeats, device)
            start, end = res.region
            gen = res.tokens[:, start:end].cpu()  # (B, gen_length)
            row: dict[str, Any] = {
                "model": sec.name,
                "gen_length": gen_length,
                "prompt_tokens": P,
                "batch": len(ids),
                "block_length": args.block_length,
                "policy": pol.label,
                "cache": cache,
                "steps": res.steps,
                "nfe": res.nfe,
                "seconds": sec_s,
                "tokens_per_s": len(ids) * gen_length / sec_s,
            }
            if base is None:
                base, base_tokens = row, gen
            assert base_tokens is not None
            row["speedup"] = base["seconds"] / sec_s
            row["nfe_ratio"] = base["nfe"] / res.nfe
            row["agreement"] = float((gen == base_tokens).float().mean())
            cut = [cut_at_eos(r, cfg.eos_id) for r in gen.tolist()]
            row["tokens_per_s_to_eos"] = sum(map(len, cut)) / sec_s
            row.update(quality(res.texts(tok), cut, prompts, scorer if sec.trained else None))
            sec.rows.append(row)
            print_row(row, flush=True)


def run_ar(
    sec: Section,
    prompts: list[str],
    args: argparse.Namespace,
    baselines: dict[int, dict[str, Any]],
    scorer: Any,
    device: torch.device,
) -> None:
    cfg, tok, ids = sec.config, sec.tokenizer, sec.prompt_ids
    loaded = _loaded(sec)
    P = max(len(r) for r in ids)
    api.start(loaded, ids, SampleConfig(gen_length=4)).run()  # warm-up
    for gen_length in sec.lengths:

        def run(n: int = gen_length) -> Any:
            sc = SampleConfig(gen_length=n, temperature=args.temperature, seed=args.seed,
                              segment_length=args.segment_length,
                              repetition_penalty=args.repetition_penalty,
                              no_repeat_ngram_size=args.no_repeat_ngram_size)
            return api.start(loaded, ids, sc).run()

        res, sec_s = timed(run, args.repeats, device)
        gen = res.tokens[:, res.region[0] : res.region[1]].cpu()
        tps = len(ids) * res.steps / sec_s  # rows stop together at EOS: tokens actually decoded
        base = baselines.get(gen_length)
        row: dict[str, Any] = {
            "model": sec.name,
            "gen_length": gen_length,
            "prompt_tokens": P,
            "batch": len(ids),
            "block_length": None,
            "policy": "autoregressive",
            "cache": "kv",
            "steps": res.steps,
            "nfe": res.nfe,
            "seconds": sec_s,
            "tokens_per_s": tps,
            "speedup": tps / base["tokens_per_s"] if base else None,  # tokens/s ratio
            "nfe_ratio": base["nfe"] / res.nfe if base else None,
            "agreement": None,
        }
        cut = [cut_at_eos(r, cfg.eos_id) for r in gen.tolist()]
        row["tokens_per_s_to_eos"] = sum(map(len, cut)) / sec_s
        row.update(quality(res.texts(tok), cut, prompts, scorer))
        sec.rows.append(row)
        print_row(row, flush=True)


HEADER = (
    f"{'gen':>4} {'policy':<14} {'cache':<6} {'NFE':>5} {'NFE÷':>6} {'sec':>8} {'tok/s':>8} "
    f"{'speed-up':>8} {'gen ppl':>8} {'entropy':>7} {'dist-2':>6} {'agree':>6}"
    "\n(tok/s: positions decoded, post-EOS included for diffusion rows; dist-2 pooled over "
    "the batch)"
)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_row(r: dict[str, Any], flush: bool = False) -> None:
    print(
        f"{r['gen_length']:>4} {r['policy']:<14} {r['cache']:<6} {r['nfe']:>5} "
        f"{_fmt(r['nfe_ratio'], '.2f'):>6} "
        f"{r['seconds']:>8.3f} {r['tokens_per_s']:>8.1f} {_fmt(r['speedup'], '.2f'):>8} "
        f"{_fmt(r['gen_ppl'], '.1f'):>8} {r['entropy']:>7.3f} {r['distinct_2']:>6.3f} "
        f"{_fmt(r['agreement'], '.3f'):>6}",
        flush=flush,
    )


def header(sec: Section) -> None:
    n = sum(p.numel() for p in sec.model.parameters())
    c = sec.config
    print(
        f"\n== {sec.name}: {n / 1e6:.1f}M params, d_model {c.d_model}, {c.n_layers} layers, vocab "
        f"{c.vocab_size}, "
        f"max_seq_len {c.max_seq_len}, attention "
        f"{c.attention}{'' if sec.trained else ', random weights'}"
    )
    for note in sec.notes:
        print(f"   note: {note}")
    print(HEADER, flush=True)


PPL_SLACK, ENTROPY_SLACK = 1.10, 0.95
"""A row keeps the teacher's quality when its gen ppl is at most 10% above, and its unigram
entropy at most 5% below, the teacher's one-token-per-step baseline (issue 14's goal)."""


def keeps_quality(row: dict[str, Any], ref: dict[str, Any]) -> bool:
    """Whether ``row`` is within the quality slack of the reference row ``ref``."""
    if row["gen_ppl"] is not None and ref["gen_ppl"] is not None:
        if row["gen_ppl"] > PPL_SLACK * ref["gen_ppl"]:
            return False
    return row["entropy"] >= ENTROPY_SLACK * ref["entropy"]


def compare(
    teacher: Section, student: Section, ar: Section | None, baseline: str
) -> list[dict[str, Any]]:
    """Per gen length: the teacher's baseline, then each model's best row (the fastest that
    keeps the teacher's quality; the fastest of all when none does, flagged), with tokens per
    forward and tokens/s ratios to the teacher's baseline and to the AR model."""
    out = []
    for g in teacher.lengths:
        ref = next(
            (r for r in teacher.rows if r["gen_length"] == g and r["policy"] == baseline
             and r["cache"] == "none"), None,
        )  # fmt: skip
        if ref is None:
            continue
        ar_row = next((r for r in ar.rows if r["gen_length"] == g), None) if ar else None
        picks = [("teacher 1/step", ref, True)]
        for name, sec in (("teacher best", teacher), ("student best", student)):
            rows = [r for r in sec.rows if r["gen_length"] == g]
            good = [r for r in rows if keeps_quality(r, ref)]
            pool = good or rows
            if pool:
                picks.append((name, max(pool, key=lambda r: r["tokens_per_s"]), bool(good)))
        if ar_row is not None:
            picks.append(("autoregressive", ar_row, keeps_quality(ar_row, ref)))
        for name, r, ok in picks:
            # positions each row decoded: the whole length for diffusion, the steps taken for
            # AR (its rows stop together at EOS)
            decoded = r["steps"] if r["policy"] == "autoregressive" else g
            out.append({
                "gen_length": g, "which": name, "model": r["model"], "policy": r["policy"],
                "cache": r["cache"], "keeps_quality": ok,
                "tokens_per_forward": decoded / r["nfe"] if r["nfe"] else None,
                "tokens_per_s": r["tokens_per_s"],
                "x_teacher_1step": r["tokens_per_s"] / ref["tokens_per_s"],
                "x_ar": r["tokens_per_s"] / ar_row["tokens_per_s"] if ar_row else None,
                "gen_ppl": r["gen_ppl"], "entropy": r["entropy"], "distinct_2": r["distinct_2"],
            })  # fmt: skip
    return out


def print_comparison(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n== teacher vs student (best = fastest within gen ppl x{PPL_SLACK:g} and entropy "
        f"x{ENTROPY_SLACK:g} of the teacher's 1/step; * = none qualified, fastest shown)"
    )
    print(
        f"{'gen':>4} {'which':<15} {'policy':<14} {'cache':<6} {'tok/fwd':>7} {'tok/s':>8} "
        f"{'x 1/step':>8} {'x AR':>6} {'gen ppl':>8} {'entropy':>7} {'dist-2':>6}"
    )
    for r in rows:
        mark = "" if r["keeps_quality"] else "*"
        print(
            f"{r['gen_length']:>4} {r['which'] + mark:<15} {r['policy']:<14} {r['cache']:<6} "
            f"{_fmt(r['tokens_per_forward'], '.2f'):>7} {r['tokens_per_s']:>8.1f} "
            f"{r['x_teacher_1step']:>8.2f} {_fmt(r['x_ar'], '.2f'):>6} "
            f"{_fmt(r['gen_ppl'], '.1f'):>8} {r['entropy']:>7.3f} {r['distinct_2']:>6.3f}",
            flush=True,
        )


def plot_frontier(sections: Sequence[Section], path: Path) -> None:
    """Quality vs speed, one curve per model through its Pareto-optimal rows: gen ppl (lower is
    better) when scored, else unigram entropy (higher is better)."""
    try:
        import matplotlib
    except ImportError:
        print("frontier: matplotlib is not installed, no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = all(r["gen_ppl"] is not None for s in sections for r in s.rows)
    key = "gen_ppl" if scored else "entropy"
    better = (lambda a, b: a < b) if scored else (lambda a, b: a > b)
    fig, axes = plt.subplots(1, len(sections[0].lengths) or 1, figsize=(11, 4.2), squeeze=False)
    for ax, g in zip(axes[0], sections[0].lengths, strict=False):
        for sec in sections:
            rows = [r for r in sec.rows if r["gen_length"] == g and r[key] is not None]
            if not rows:
                continue
            label = sec.name.split(" (")[0]
            pts = ax.scatter([r["tokens_per_s"] for r in rows], [r[key] for r in rows], s=14,
                             alpha=0.5, label=label)  # fmt: skip
            front, best = [], None
            for r in sorted(rows, key=lambda r: -r["tokens_per_s"]):  # fastest first
                if best is None or better(r[key], best):
                    front.append(r)
                    best = r[key]
            ax.plot([r["tokens_per_s"] for r in front], [r[key] for r in front],
                    color=pts.get_facecolor()[0], alpha=0.9)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("tokens/s (log)")
        ax.set_ylabel("gen ppl (lower is better)" if scored else "unigram entropy (nats)")
        ax.set_title(f"gen length {g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default=str(asset_path("demo")),
        help="trained diffusion checkpoint (default: the demo)",
    )
    ap.add_argument(
        "--speed-preset",
        default=None,
        choices=[*MODEL_PRESETS, "none"],
        help="preset of the random-weight speed model (none = skip it; default: small, "
        "--quick: tiny)",
    )
    ap.add_argument(
        "--speed-max-seq-len",
        type=positive_int,
        default=None,
        help="context of the speed model (default: 1024; --quick: 128)",
    )
    ap.add_argument(
        "--ar-model", help="a causal checkpoint to decode the same prompts with its KV cache"
    )
    ap.add_argument(
        "--student", help="a distilled student of --model (unmask distill) to compare with it"
    )
    ap.add_argument(
        "--frontier",
        help="quality-speed frontier PNG (default with --student: docs/distill_frontier.png)",
    )
    ap.add_argument("--gen-lengths", type=positive_int, nargs="+", default=None,
                    help="(default: 256 512; --quick: 32)")  # fmt: skip
    ap.add_argument(
        "--block-length",
        type=positive_int,
        default=None,
        help="semi-AR block length of every diffusion row (default: 32; --quick: 16)",
    )
    ap.add_argument(
        "--segment-length", type=int, default=None, metavar="N",
        help="write every length in segments of N tokens over a sliding window "
             "(SampleConfig.segment_length), so lengths past the context run instead of "
             "being cut to it",
    )
    ap.add_argument("--batch", type=positive_int, default=None,
                    help="prompts decoded together (default: 4; --quick: 2)")  # fmt: skip
    ap.add_argument("--prompt-words", type=positive_int, default=None,
                    help="(default: 8; --quick: 4)")  # fmt: skip
    ap.add_argument("--repeats", type=positive_int, default=1, help="timed runs per row (median)")
    ap.add_argument(
        "--policies",
        nargs="+",
        choices=[p.label for p in POLICY_SET],
        metavar="LABEL",
        help=f"subset of: {', '.join(repr(p.label) for p in POLICY_SET)} (the first is always run)",
    )
    ap.add_argument("--caches", nargs="+", choices=CACHES, default=None,
                    help="(default: all; --quick: none dual)")  # fmt: skip
    ap.add_argument(
        "--score",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="generative perplexity with SmolLM2 (default: on when installed, off with --quick)",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads", type=non_negative_int, default=None,
        help="torch CPU threads (0 = torch's default; default: 0; --quick: 1)",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="init seed of the speed model and the sampling seed"
    )
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature of every row (0 = greedy; agreement is then exact-match)",
    )
    ap.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="repetition penalty of every row (1 = off; docs/sampling.md)",
    )
    ap.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="n-gram ban of every row (0 = off; docs/sampling.md)",
    )
    ap.add_argument("--json", type=output_file,
                    help="write all rows (and the generated texts) here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="defaults for a tiny subset (gen 32, blocks of 16, 2 policies, caches none/dual, "
        "tiny speed model, no scoring); flags given still win",
    )
    args = ap.parse_args(argv)
    fill_defaults(
        args,
        normal={"gen_lengths": [256, 512], "block_length": 32, "batch": 4, "prompt_words": 8,
                "policies": None, "caches": list(CACHES), "speed_preset": "small",
                "speed_max_seq_len": 1024, "threads": 0},
        quick={"gen_lengths": [32], "block_length": 16, "batch": 2, "prompt_words": 4,
               "policies": ["llada 1/step", "threshold .9"], "caches": ["none", "dual"],
               "speed_preset": "tiny", "speed_max_seq_len": 128, "threads": 1},
    )  # fmt: skip
    if args.quick:
        args.score = bool(args.score)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.block_length <= 0 or any(g <= 0 for g in args.gen_lengths):
        raise UserError("--block-length and --gen-lengths must be positive")
    device = resolve_device(args.device)
    policies = [POLICY_SET[0]] + [
        p for p in POLICY_SET[1:] if args.policies is None or p.label in args.policies
    ]

    demo = load(args.model, device=str(device))  # before the scorer: a bad path fails at once
    ar = None
    if args.ar_model:  # now, not after the diffusion rows: a wrong path or model fails at once
        ar = load(args.ar_model, device=str(device))
        if ar.config.attention != "causal":
            raise UserError(
                f"--ar-model {args.ar_model}: attention is {ar.config.attention!r}, not causal"
            )
    scorer = None
    if args.score is not False:
        from unmask.scoring import ReferenceScorer

        try:
            t0 = time.perf_counter()
            scorer = ReferenceScorer.from_smollm2(device=device)
            print(
                f"reference scorer SmolLM2-135M-Instruct loaded in {time.perf_counter() - t0:.1f} "
                "s",
                flush=True,
            )
        except UserError as e:
            if args.score:
                raise
            print(f"gen ppl: n/a ({e})")

    prompts = prompt_texts(args.batch, args.prompt_words)
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, batch "
        f"{len(prompts)}, "
        f"block_length {args.block_length}, temperature {args.temperature:g}; baseline = "
        f"{policies[0].label!r}, cache none"
    )
    print(f"prompts: {prompts}")
    sections = [
        Section(f"demo ({demo.path})", demo.model, demo.tokenizer, demo.config, trained=True)
    ]
    if args.student:
        student = load(args.student, device=str(device))
        if student.tokenizer.vocab_size != demo.tokenizer.vocab_size:
            raise UserError(f"--student {args.student}: not the tokenizer of --model")
        sections.append(
            Section(f"student ({student.path})", student.model, student.tokenizer,
                    student.config, trained=True)
        )  # fmt: skip
    if args.speed_preset != "none":
        c = demo.config
        speed_cfg = model_preset(
            args.speed_preset,
            vocab_size=c.vocab_size,
            max_seq_len=args.speed_max_seq_len,
            attention="bidirectional",
            mask_id=c.mask_id,
            pad_id=c.pad_id,
            eos_id=c.eos_id,
            bos_id=c.bos_id,
        )
        torch.manual_seed(args.seed)
        speed = Transformer(speed_cfg).to(device).eval()
        sections.append(
            Section(f"random {args.speed_preset}", speed, demo.tokenizer, speed_cfg, trained=False)
        )

    for sec in sections:
        sec.notes.append(
            "quality columns need a trained model: gen ppl not computed"
            if not sec.trained
            else "gen ppl: continuations given their prompts"
            if scorer
            else "gen ppl: n/a (no scorer)"
        )
        sec.plan(prompts, args)
        header(sec)
        run_section(sec, prompts, args, policies, args.caches, scorer, device)

    if ar is not None:
        sec = Section(
            f"autoregressive ({ar.path})", ar.model, ar.tokenizer, ar.config, trained=True
        )
        sec.notes.append("speed-up and NFE÷ vs the demo model's baseline at the same gen_length")
        sec.plan(prompts, args)
        header(sec)
        baselines = {
            r["gen_length"]: r
            for r in sections[0].rows
            if r["policy"] == policies[0].label and r["cache"] == "none"
        }
        run_ar(sec, prompts, args, baselines, scorer, device)
        sections.append(sec)

    comparison: list[dict[str, Any]] = []
    if args.student:
        students = [sec for sec in sections if sec.name.startswith("student (")]
        ars = [sec for sec in sections if sec.name.startswith("autoregressive (")]
        comparison = compare(sections[0], students[0], ars[0] if ars else None, policies[0].label)
        print_comparison(comparison)
        frontier = Path(args.frontier or Path(__file__).resolve().parent.parent / "docs"
                        / "distill_frontier.png")  # fmt: skip
        plot_frontier([sections[0], students[0], *ars], frontier)
        print(f"frontier: {frontier}")

    if args.json:
        out = {
            "meta": {
                "torch": torch.__version__,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "python": platform.python_version(),
                "prompts": prompts,
                "block_length": args.block_length,
                "gen_lengths": args.gen_lengths,
                "baseline": policies[0].label,
                "temperature": args.temperature,
                "repetition_penalty": args.repetition_penalty,
                "no_repeat_ngram_size": args.no_repeat_ngram_size,
                "seed": args.seed,
                "scorer": repr(scorer) if scorer else None,
                "quick": args.quick,
                "tokens_per_s": "positions decoded per second: batch x gen_length for "
                "diffusion rows (post-EOS padding included), batch x steps for AR rows; "
                "tokens_per_s_to_eos counts the tokens before each row's first EOS for both",
                "distinct_2": "pooled over the batch (one count over all texts)",
            },
            "sections": [{"name": s.name, "notes": s.notes, "rows": s.rows} for s in sections],
            "teacher_vs_student": comparison,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json_text(out))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    from _common import run

    run(main)
