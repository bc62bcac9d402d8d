"""Which rounding should a continuous-diffusion sample get with no flags? A temperature sweep.

The continuous decoders (``embed-diffusion``, ``latent-diffusion``) round each step's logits
to tokens: the argmax (temperature 0) or a draw at ``--temperature`` (the clamping trick of
Diffusion-LM; ``unmask.sampling.continuous``). This script samples ``--n`` continuations of
``--gen-length`` tokens from each ``--model`` at every temperature of the grid, each after
``--prompt-len`` tokens of held-out text (the starts of ``--n`` different windows of
``--data``'s validation split, as ``benchmarks/objectives.py`` picks them; a latent model
takes no prompt and samples whole windows, whose first ``--gen-length`` tokens are kept), and
reports for the continuations alone the columns of ``benchmarks/defaults.py`` (gen ppl under
SmolLM2-135M, per-text distinct word bigrams, token entropy, repeated word 4-grams), distinct
token bigrams per text (``dist2_tok``: "to to to to" and ", the, the" repeat tokens more than
words) and the broken samples (a special token or U+FFFD). The first row is the held-out
continuations of the same prompts, the target of the diversity columns; a setting is
*degenerate* when it has a broken sample or one of its dist-2,
dist2_tok or entropy falls more than 15% below the held-out text's (the rule of
``benchmarks/defaults.py``). ``x_floor`` divides each gen ppl by the tempered-unigram
floor's at the same entropy (``benchmarks/objectives.py``: unigram samples of ``--data`` at
``FLOOR_TEMPERATURES``, as many and as long as these); below 1 the scorer prefers the
model's text to a unigram's of the same diversity. The recommended default is the
non-degenerate temperature with the lowest ``x_floor``: gen ppl alone always favours the
lowest entropy that is not yet called degenerate (without the scorer: the lowest rep4).

    python benchmarks/rounding.py --data WORK/data --model WORK/embed --model WORK/latent

Prints one table per model and writes ``--json`` (default ``runs/bench/rounding.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    default_output,
    json_text,
    non_negative_floats,
    output_file,
    positive_int,
)
from defaults import quality  # benchmarks/defaults.py: the same columns, the same rule
from objectives import (  # the prompts, the broken count and the tempered-unigram floor
    floor_at,
    floor_curve,
    held_out_prompts,
    is_broken,
    unigram_nll,
)

from unmask import api
from unmask.checkpoint import load, native_config
from unmask.config import SampleConfig
from unmask.data import TokenDataset
from unmask.errors import UserError
from unmask.evaluate import distinct_n
from unmask.sampling import decode_generations
from unmask.sampling.protocol import cut_at_eos


def held_out(data: str, n: int, prompt_len: int, length: int) -> tuple[list[list[int]], list[str]]:
    """The prompts (the first ``prompt_len`` tokens of ``n`` held-out windows) and their true
    continuations of ``length`` tokens, decoded."""
    val = TokenDataset(Path(data), "val")
    tok = val.tokenizer()
    windows = held_out_prompts(Path(data), n, prompt_len + length, prompt_len + length)
    return [w[:prompt_len] for w in windows], [tok.decode(w[prompt_len:]) for w in windows]


def token_dist2(texts: list[str], tok: Any) -> dict[str, float]:
    """Distinct token bigrams per text, averaged: "to to to to" and ", the, the" show here
    even when the text has few whitespace words to repeat."""
    return {"dist2_tok": sum(distinct_n([tok.encode(t)], 2) for t in texts) / len(texts)}


def data_floor(data: str, n: int, length: int, scorer: Any) -> list[dict]:
    """The tempered-unigram floor of ``data`` (``objectives.floor_curve``), measured as the
    models' samples are (``quality``): ``n`` samples of ``length`` tokens per temperature."""
    train = TokenDataset(Path(data), "train")  # the models' tokenizer too
    tok = train.tokenizer()

    def measure(samples: dict) -> tuple[float, float]:
        q = quality(samples["texts"], None, tok, scorer)
        return q["entropy"], q["gen_ppl"]

    shape = argparse.Namespace(gen_samples=n, gen_length=length)
    return floor_curve(Path(data), unigram_nll(Path(data), train.vocab_size), shape, measure)


CONTINUOUS = ("embed-diffusion", "latent-diffusion")
"""The objectives whose decoders round a continuous state to tokens at a temperature."""


temperatures = non_negative_floats("a temperature")
"""``--temperatures``: a comma list of temperatures >= 0 (an argparse type)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="checkpoint (repeatable)")
    ap.add_argument("--data", required=True, help="the prepared corpus the models trained on")
    ap.add_argument("--temperatures", type=temperatures, default="0,0.3,0.5,0.7,0.85,1",
                    help="comma-separated, each 0 or more")
    ap.add_argument("--n", type=positive_int, default=16, help="samples per setting (default: 16)")
    ap.add_argument("--gen-length", type=positive_int, default=56,
                    help="tokens scored (default: 56)")  # fmt: skip
    ap.add_argument(
        "--prompt-len", type=positive_int, default=8,
        help="held-out tokens before each (default: 8)"
    )
    ap.add_argument("--steps", type=positive_int, default=64, help="denoising steps (default: 64)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--no-score", action="store_true", help="skip the SmolLM2 scorer")
    ap.add_argument("--json", type=output_file, default=str(default_output("rounding.json")),
                    help="write the results here (default: runs/bench/rounding.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in args.model:  # all found and of a continuous family before anything is measured
        # its config.json read, not the model loaded (a publisher's folder: loaded, refused)
        cfg = native_config(path) or load(path, device="cpu").config
        if cfg.objective not in CONTINUOUS:  # an mdlm model was swept as if it were
            raise UserError(f"--model {path}: objective {cfg.objective!r} rounds "
                            f"nothing; give an {' or '.join(CONTINUOUS)} checkpoint")
        window = cfg.latent_window if cfg.objective == "latent-diffusion" else None
        if window is not None and window < args.gen_length:  # shorter texts than the
            # held-out ones they are compared with: their entropy and distinct-n are skewed
            raise UserError(f"--model {path} writes windows of {window} tokens; give "
                            f"--gen-length {window} or less (got {args.gen_length})")
    scorer = None
    if not args.no_score:
        from unmask.scoring import ReferenceScorer

        scorer = ReferenceScorer.from_smollm2()
    temps = args.temperatures
    report: dict[str, Any] = {"args": vars(args), "models": {}}
    curve = None if scorer is None else data_floor(args.data, args.n, args.gen_length, scorer)
    for path in dict.fromkeys(args.model):  # a path given twice is measured once
        loaded = load(path, device="cpu")  # one model in memory at a time
        loaded.model.eval()
        tok, cfg = loaded.tokenizer, loaded.config
        prompts, truth = held_out(args.data, args.n, args.prompt_len, args.gen_length)
        sampled = args.gen_length
        if cfg.objective == "latent-diffusion":  # a latent model takes no prompt
            prompts = [[]] * args.n
            sampled = cfg.latent_window or sampled  # and writes whole windows
        rows = [{"setting": "held-out text", "temperature": None, "seconds": 0.0,
                 **quality(truth, None, tok, scorer), **token_dist2(truth, tok)}]  # fmt: skip
        for temp in temps:
            sc = SampleConfig(gen_length=sampled, steps=args.steps, seed=0,
                              temperature=temp)  # fmt: skip
            t0 = time.perf_counter()
            res = api.start(loaded, prompts, sc).run()
            dt = time.perf_counter() - t0
            gen = [list(g)[: args.gen_length] for g in res.gen_ids]
            texts = decode_generations(gen, tok, cfg.eos_id)
            broken = sum(is_broken(cut_at_eos(g, cfg.eos_id), t, tok)
                         for g, t in zip(gen, texts, strict=True))  # fmt: skip
            rows.append({"setting": f"T={temp:g}", "temperature": temp, "seconds": dt,
                         **quality(texts, None, tok, scorer), **token_dist2(texts, tok),
                         "broken": broken, "texts": texts})  # fmt: skip
            print(f"{path} {rows[-1]}", file=sys.stderr, flush=True)
        if curve is not None:
            for r in rows:
                floor = floor_at(curve, r["entropy"])
                r["x_floor"] = None if floor is None else r["gen_ppl"] / floor
        ref = rows[0]
        ok = [
            r
            for r in rows[1:]
            if all(r[c] >= 0.85 * ref[c] for c in ("dist2", "dist2_tok", "entropy"))
            and not r["broken"]  # junk the scorer may rate well is never recommended
        ]
        # the scorer's approval at equal diversity: gen ppl alone favours the lowest entropy
        # that is not yet degenerate (x_floor is None only outside the floor's entropy range)
        key = "x_floor" if scorer is not None else "rep4"
        ranked = [r for r in ok if r.get(key) is not None]
        best = min(ranked, key=lambda r: r[key]) if ranked else None
        cols = (["gen_ppl", "x_floor"] if scorer else []) + ["dist2", "dist2_tok", "entropy",
                                                             "rep4"]  # fmt: skip
        print(f"\n{path} ({cfg.objective}, {args.n} x {args.gen_length} tokens, "
              f"{args.steps} steps)")  # fmt: skip
        print("| rounding | " + " | ".join(cols) + " | broken | |")
        print("|---|" + "---:|" * (len(cols) + 1) + "---|")
        for r in rows:
            degenerate = r is not ref and r not in ok
            mark = "recommended" if r is best else ("degenerate" if degenerate else "")
            vals = [
                "-" if r.get(c) is None else f"{r[c]:.1f}" if c == "gen_ppl" else f"{r[c]:.3f}"
                for c in cols
            ]
            vals.append(str(r.get("broken", "-")))
            print(f"| {r['setting']} | " + " | ".join(vals) + f" | {mark} |")
        report["models"][path] = {"objective": cfg.objective, "rows": rows,
                                  "recommended": best and best["setting"]}  # fmt: skip
    report["floor_curves"] = {args.data: curve} if curve is not None else {}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json_text(report, indent=1, default=lambda x: None))
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
